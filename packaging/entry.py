"""PyInstaller entry point of the ``ecr-credential-provider`` binary."""

import gc
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import CodeType, ModuleType



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


# Our own modules, as one table written by the spec (the same code objects as in PyInstaller's PYZ);
# the spec and packaging/sbom.py import the name from here (importing this module does nothing else).
MODULES_FILE = "ecr_kubelet-modules.marshal"


class _OurModules:
    """Imports ecr_kubelet's modules from MODULES_FILE, read once: a cache hit imports about 25 of them, and
    PyInstaller's importer spends about 0.15 ms on each (its path finder in Python, then opening the
    executable again to read the module), more than running most of them. Modules get the spec, file
    and package path PyInstaller's importer gives them; any other name is left to it."""

    def __init__(self, modules: dict[str, tuple[bool, bytes]], meipass: str) -> None:
        import _frozen_importlib
        import marshal

        self.modules = modules
        self.meipass = meipass
        self.spec_type = _frozen_importlib.ModuleSpec
        self.loads = marshal.loads

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> "ModuleSpec | None":
        entry = self.modules.get(fullname)
        if entry is None:
            return None
        is_package = entry[0]
        where = os.path.join(self.meipass, *fullname.split("."))
        origin = os.path.join(where, "__init__.py") if is_package else where + ".py"
        # a loader by protocol (importlib.abc would be one more import on every call)
        spec = self.spec_type(fullname, self, origin=origin, is_package=is_package)  # type: ignore[arg-type]
        spec.has_location = True
        if is_package:
            spec.submodule_search_locations = [where]
        return spec

    def create_module(self, spec: "ModuleSpec") -> None:
        return None

    def exec_module(self, module: "ModuleType") -> None:
        exec(self.get_code(module.__spec__.name), module.__dict__)  # type: ignore[union-attr]  # noqa: S102

    def get_code(self, fullname: str) -> "CodeType":
        return self.loads(self.modules[fullname][1])  # type: ignore[no-any-return]

    def is_package(self, fullname: str) -> bool:
        return self.modules[fullname][0]

    def get_source(self, fullname: str) -> None:
        return None  # no source is bundled


def _serve_our_modules() -> None:
    """Put _OurModules first on sys.meta_path when the table is there and made by this interpreter's version
    of marshal; otherwise (or on any error) PyInstaller's importer loads everything, as it would anyway."""
    try:
        import _frozen_importlib_external
        import marshal

        meipass = sys._MEIPASS  # type: ignore[attr-defined]
        with open(os.path.join(meipass, MODULES_FILE), "rb") as fh:
            table = marshal.loads(fh.read())  # noqa: S302 (our own file, in the bundle the launcher verified)
        if table["magic"] != _frozen_importlib_external.MAGIC_NUMBER or table["python"] != sys.version:
            return
        finder = _OurModules(table["modules"], meipass)
    except Exception:  # PyInstaller's importer has every module too
        return
    sys.meta_path.insert(0, finder)


if __name__ == "__main__":
    # A run answers one request and exits (botocore clients are kept for the whole run anyway), so
    # there is no garbage worth collecting; the collector's passes over the objects created while
    # importing botocore cost ~8 ms of a cache miss. gc, os and sys were loaded by the bootstrap already.
    gc.disable()
    _restore_environment()
    _serve_our_modules()
    from ecr_kubelet.cli import main

    sys.exit(main())
