"""Where the binary's speed tricks on private internals may load: the frozen binary, for the versions it was built with.

compiled_re, stand_ins and jsoncodec reach into CPython's `re` compiler and `_json` scanner and into
botocore's and urllib3's import chains: internals that change between versions without notice. They
load only in the release binary (PyInstaller sets `sys.frozen`), whose interpreter and packages are
fixed at build time: scripts/build-binary records their exact versions (`versions()`, written into
`_build_info.py` as `PINNED`) and each trick compares the running version with the recorded one
before it loads. Anywhere else (a pip install, any Python, any botocore) `recorded()` is empty and
the program takes the ordinary path.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

# The packages whose internals a trick relies on (stand_ins), by their import names.
PACKAGES = ("botocore", "urllib3")


def versions() -> dict[str, str]:
    """What this interpreter and its packages are: what the build records (`python`, then each package)."""
    import importlib

    found = {"python": sys.version}
    for name in PACKAGES:
        found[name] = str(importlib.import_module(name).__version__)
    return found


def recorded() -> dict[str, str]:
    """The versions the frozen binary was built with; empty outside it or without a usable record."""
    if not getattr(sys, "frozen", False):
        return {}
    try:
        from ecr_kubelet._build_info import PINNED  # type: ignore[import-not-found,unused-ignore]
    except Exception:  # no record, or a broken one: no trick
        return {}
    if not isinstance(PINNED, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in PINNED.items()):
        return {}
    return PINNED


def python() -> bool:
    """True in the frozen binary running the interpreter it was built with."""
    version = recorded().get("python")
    return version is not None and version == sys.version


def package(module: ModuleType) -> bool:
    """True in the frozen binary if `module` (a top-level package, imported) is the recorded version."""
    version = recorded().get(module.__name__)
    return version is not None and version == getattr(module, "__version__", None)
