"""PyInstaller entry point of the ``ecr-credential-provider`` binary."""

import gc
import os
import sys

# A run answers one request and exits (botocore clients are kept for the whole run anyway), so
# there is no garbage worth collecting; the collector's passes over the objects created while
# importing botocore cost ~8 ms of a cache miss. os and sys were loaded by the bootstrap already.
gc.disable()


def _restore_environment() -> None:
    """Undo what the launcher and PyInstaller's bootloader set for themselves.

    The bootloader points LD_LIBRARY_PATH at the bundle (keeping the node's value in
    LD_LIBRARY_PATH_ORIG); a program we start (a credential_process) must not inherit it, or the
    node's binaries would load the bundle's glibc with the node's loader. The launcher passes the
    name it was invoked as (for example docker-credential-ecr-login) in ECR_KUBELET_ARGV0 and the
    node's LD_PRELOAD in ECR_KUBELET_LD_PRELOAD.
    """
    orig = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if orig is not None:
        os.environ["LD_LIBRARY_PATH"] = orig
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)
    # The launcher keeps the node's LD_PRELOAD away from the carried loader (a library built for
    # a newer glibc would stop it) and passes it here, for the node's own programs.
    preload = os.environ.pop("ECR_KUBELET_LD_PRELOAD", None)
    if preload is not None:
        os.environ["LD_PRELOAD"] = preload
    argv0 = os.environ.pop("ECR_KUBELET_ARGV0", None)
    if argv0:
        sys.argv[0] = argv0


if __name__ == "__main__":
    _restore_environment()
    from ecr_kubelet.cli import main

    sys.exit(main())
