"""Command line: `ecr-credential-provider [flags]` answers one kubelet request on stdin (kubelet.py);
`docker-credential <verb>` (or the name docker-credential-ecr-login) is the Docker helper, `diagnose IMAGE`
and `validate-config PATH` the tools for people. This module only chooses among them.

Exit codes: 0 answered (possibly with no credentials), 1 internal or unexpected AWS error (or stdout not
writable), 2 bad request, flags or local configuration, 3 no AWS credentials or access denied, 4 AWS
throttling / unavailable / timeout. Every subcommand ends through command.Command (one error line).
"""

from __future__ import annotations

import os
import sys

from ecr_kubelet.command import end_process
from ecr_kubelet.flags import HELPER_PROG, HELPER_SUBCOMMAND

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
        # The binary's launcher hands the name it was invoked by on to sys.argv[0] (packaging/entry.py).
        if os.path.basename(sys.argv[0]) == HELPER_PROG:
            argv = [HELPER_SUBCOMMAND, *argv]
    if argv[:1] == [HELPER_SUBCOMMAND]:
        from ecr_kubelet.dockerhelper import main as helper_main

        return helper_main(argv[1:])
    if argv[:1] == ["validate-config"]:
        from ecr_kubelet.validate_config import main as validate_main

        return int(validate_main(argv[1:]))
    if argv[:1] == ["diagnose"]:
        from ecr_kubelet.diagnose import main as diagnose_main

        return diagnose_main(argv[1:])
    from ecr_kubelet.kubelet import main as kubelet_main

    return kubelet_main(argv)


def run() -> NoReturn:
    """The process's entry (the console scripts, `python -m ecr_kubelet`, the binary): `main`, then the
    process ends at once (command.end_process)."""
    end_process(main())
