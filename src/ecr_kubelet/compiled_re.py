"""The binary's compiled regular expressions, served to ``re`` from a table made at build time.

Python compiles every regular expression from its source text in each new process, with a
parser and compiler written in Python: a cache miss compiles some 120 (urllib3's URL grammar,
botocore, http.client, email, ...), ~15 ms. packaging/re_cache.py records, at build time and
with the bundle's own Python, what ``re`` hands ``_sre.compile`` for each pattern a run compiles;
the binary carries that table as ``re-cache.marshal``. Importing this module (awsapi does, before
botocore; a cache hit compiles no pattern) makes ``re`` pass the recorded code for those patterns
straight to ``_sre.compile``. Any other pattern compiles as usual, a table written by another
Python (version, ``_sre.MAGIC``, ``_sre.CODESIZE``) is ignored, and outside the binary there is
no table. ``re``'s own per-process cache still sits in front of both.
"""

from __future__ import annotations

import importlib
import marshal
import os
import sys
from typing import Any

# re's compiler and its C engine (no type stubs for either).
_compiler: Any = importlib.import_module("re._compiler")
_sre: Any = importlib.import_module("_sre")

FILE = "re-cache.marshal"
# marshal format 2 has no back-references, whose use depends on reference counts: the bytes
# depend only on the table, so builds stay reproducible.
MARSHAL_VERSION = 2

# (pattern, flags as re passes them) -> what re._compiler.compile hands _sre.compile after the
# pattern: final flags, code, groups - 1, groupindex, indexgroup.
Entry = tuple[int, list[int], int, dict[str, int], tuple[str | None, ...]]
Table = dict[tuple[str | bytes, int], Entry]


def stamp() -> tuple[str, int, int]:
    """What a table is valid for: this Python and its regular expression engine."""
    return (sys.version, _sre.MAGIC, _sre.CODESIZE)


def dumps(table: Table) -> bytes:
    return marshal.dumps((stamp(), table), MARSHAL_VERSION)


def install(path: str) -> bool:
    """Serve the patterns recorded in `path`; False (and nothing changed) if there is no usable table."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()  # in one piece: marshal.load(fh) would read it in many small calls
        recorded, table = marshal.loads(data)  # noqa: S302  (the bundle's own file, made by dumps())
    except (OSError, EOFError, ValueError, TypeError):
        return False
    if tuple(recorded) != stamp():
        return False
    compile_source, sre_compile = _compiler.compile, _sre.compile

    def compile_from_table(p: Any, flags: int = 0) -> Any:
        entry: Entry | None = table.get((p, flags)) if type(p) in (str, bytes) else None
        if entry is None:
            return compile_source(p, flags)
        final_flags, code, groups, groupindex, indexgroup = entry
        return sre_compile(p, final_flags, code, groups, groupindex, indexgroup)

    _compiler.compile = compile_from_table
    return True


if getattr(sys, "frozen", False):  # PyInstaller's bootloader sets sys.frozen and sys._MEIPASS
    install(os.path.join(getattr(sys, "_MEIPASS", ""), FILE))
