"""PyInstaller entry point for the one-file ``ecr-credential-provider`` binary."""

import sys

from ecr_kubelet.cli import main

if __name__ == "__main__":
    sys.exit(main())
