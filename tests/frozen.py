"""Code that makes a fresh interpreter look like the frozen release binary (ecr_kubelet/pinned.py).

PyInstaller sets `sys.frozen`; scripts/build-binary records the bundled versions in `_build_info.PINNED`.
"""

from __future__ import annotations

import textwrap

from ecr_kubelet import pinned


def prelude(versions: dict[str, str] | None = None, meipass: str | None = None) -> str:
    """Python source to run first: frozen, built with `versions` (default: this interpreter's and packages')."""
    recorded = pinned.versions() if versions is None else versions
    return textwrap.dedent(f"""
        import sys as _sys, types as _types
        _sys.frozen = True
        if {meipass!r} is not None:
            _sys._MEIPASS = {meipass!r}
        _build_info = _types.ModuleType("ecr_kubelet._build_info")
        _build_info.PINNED = {recorded!r}
        _sys.modules[_build_info.__name__] = _build_info
        del _sys, _types, _build_info
    """)
