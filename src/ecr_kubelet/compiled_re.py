"""The binary's compiled regular expressions, served to ``re`` from a table made at build time.

Python compiles every regular expression from its source text in each new process, with a
parser and compiler written in Python: a cache miss compiles some 120 (urllib3's URL grammar,
botocore, http.client, email, ...), ~15 ms. packaging/re_cache.py records, at build time and
with the bundle's own Python, what ``re`` hands ``_sre.compile`` for each pattern a run compiles;
the binary carries that table as ``re-cache.marshal``. Importing this module (awsapi does, before
botocore; a cache hit compiles no pattern) makes ``re`` pass the recorded code for those patterns
straight to ``_sre.compile``. Any other pattern compiles as usual, a table written by another
Python (version, ``_sre.MAGIC``, ``_sre.CODESIZE``) is ignored. ``re``'s own per-process cache
still sits in front of both.

This reaches into ``re``'s private compiler, so it loads only in the frozen binary running the
interpreter it was built with (ecr_kubelet/pinned.py); anywhere else, or on any error, ``re`` is
left as it is.
"""

from __future__ import annotations

import marshal
import os
import sys
from typing import Any

from ecr_kubelet import pinned

FILE = "re-cache.marshal"
# marshal format 2 has no back-references, whose use depends on reference counts: the bytes
# depend only on the table, so builds stay reproducible.
MARSHAL_VERSION = 2

# (pattern, flags as re passes them) -> what re._compiler.compile hands _sre.compile after the
# pattern: final flags, code, groups - 1, groupindex, indexgroup.
Entry = tuple[int, list[int], int, dict[str, int], tuple[str | None, ...]]
Table = dict[tuple[str | bytes, int], Entry]


def engine() -> tuple[Any, Any]:
    """re's compiler module (``re._compiler``; ``sre_compile`` before 3.11) and its C engine ``_sre``."""
    name = "re._compiler" if sys.version_info >= (3, 11) else "sre_compile"
    __import__(name)
    __import__("_sre")
    return sys.modules[name], sys.modules["_sre"]


def stamp() -> tuple[str, int, int]:
    """What a table is valid for: this Python and its regular expression engine."""
    _compiler, sre = engine()
    return (sys.version, sre.MAGIC, sre.CODESIZE)


def dumps(table: Table) -> bytes:
    return marshal.dumps((stamp(), table), MARSHAL_VERSION)


def install(path: str) -> bool:
    """Serve the patterns recorded in `path`; False (and nothing changed) if there is no usable table."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()  # in one piece: marshal.load(fh) would read it in many small calls
        recorded, table = marshal.loads(data)  # noqa: S302  (the bundle's own file, made by dumps())
        if tuple(recorded) != stamp() or not isinstance(table, dict):
            return False
        compiler, sre = engine()
    except Exception:  # no table, a damaged one, or an engine unlike the one it was made for
        return False
    compile_source, sre_compile = compiler.compile, sre.compile

    def compile_from_table(p: Any, flags: int = 0) -> Any:
        entry: Entry | None = table.get((p, flags)) if type(p) in (str, bytes) else None
        if entry is None:
            return compile_source(p, flags)
        final_flags, code, groups, groupindex, indexgroup = entry
        try:
            return sre_compile(p, final_flags, code, groups, groupindex, indexgroup)
        except Exception:  # an engine that no longer takes what was recorded: compile as re would
            return compile_source(p, flags)

    compiler.compile = compile_from_table
    return True


# The frozen binary, on its own interpreter: the table is in the bundle, PyInstaller's sys._MEIPASS.
_BUNDLE = getattr(sys, "_MEIPASS", None)
if isinstance(_BUNDLE, str) and os.path.isabs(_BUNDLE) and pinned.python():
    install(os.path.join(_BUNDLE, FILE))
