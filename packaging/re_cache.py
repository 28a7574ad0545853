"""Compiled regular expressions for the binary, recorded at build time, installed at start-up.

Python compiles every regular expression from its source text in each new process, with its
parser and compiler written in Python: a cache miss compiles some 120 (urllib3's URL grammar,
botocore, http.client, email, ...), ~15 ms. The spec runs this file with the bundle's own Python
(``python re_cache.py OUT SERVICE...``): it imports every ``ecr_kubelet`` module and creates a
botocore client of each service, records what ``re`` hands ``_sre.compile`` for each pattern, and
writes the table to OUT (bundled as ``re-cache.marshal``). ``install()``, called first by
packaging/entry.py, makes ``re`` pass the recorded code for those patterns straight to
``_sre.compile``; any other pattern compiles as usual, and a table written by another Python
(version, ``_sre.MAGIC``, ``_sre.CODESIZE``) is ignored. ``re``'s own per-process cache still
sits in front of both.
"""

from __future__ import annotations

import importlib
import marshal
import re
import sys

TYPE_CHECKING = False  # typing itself costs a cache hit ~2 ms to import
if TYPE_CHECKING:
    from typing import Any

    Entry = tuple[int, list[int], int, dict[str, int], tuple[str | None, ...]]

# re's compiler and its C engine (no type stubs for either).
_compiler: Any = importlib.import_module("re._compiler")
_sre: Any = importlib.import_module("_sre")

FILE = "re-cache.marshal"
# marshal format 2 has no back-references, whose use depends on reference counts: the bytes
# depend only on the table, so builds stay reproducible.
MARSHAL_VERSION = 2


def _stamp() -> tuple[str, int, int]:
    return (sys.version, _sre.MAGIC, _sre.CODESIZE)


def install(path: str) -> bool:
    """Serve the patterns recorded in `path` from it; False (and nothing changed) if it is unusable."""
    try:
        with open(path, "rb") as fh:
            stamp, table = marshal.load(fh)  # noqa: S302  (the bundle's own file, written by write())
    except (OSError, EOFError, ValueError, TypeError):
        return False
    if tuple(stamp) != _stamp():
        return False
    compile_source = _compiler.compile
    sre_compile = _sre.compile

    def compile(p: Any, flags: int = 0) -> Any:
        entry: Entry | None = table.get((p, flags)) if type(p) in (str, bytes) else None
        if entry is None:
            return compile_source(p, flags)
        final_flags, code, groups, groupindex, indexgroup = entry
        return sre_compile(p, final_flags, code, groups, groupindex, indexgroup)

    _compiler.compile = compile
    return True


def record(services: list[str]) -> dict[tuple[str | bytes, int], Entry]:
    """The table for what a run of the program compiles: module imports and client creation."""
    import pkgutil

    table: dict[tuple[str | bytes, int], Entry] = {}
    compile_source, sre_compile = _compiler.compile, _sre.compile

    def recording(p: Any, flags: int = 0) -> Any:
        if type(p) not in (str, bytes) or flags & re.DEBUG:
            return compile_source(p, flags)
        seen: list[tuple[Any, ...]] = []

        def spy(*args: Any) -> Any:
            seen.append(args)
            return sre_compile(*args)

        _sre.compile = spy
        try:
            compiled = compile_source(p, flags)
        finally:
            _sre.compile = sre_compile
        (_pattern, final_flags, code, groups, groupindex, indexgroup), = seen
        table[p, int(flags)] = (int(final_flags), [int(op) for op in code], int(groups),
                                {str(k): int(v) for k, v in groupindex.items()}, tuple(indexgroup))
        return compiled

    _compiler.compile = recording
    try:
        import ecr_kubelet

        for module in sorted(m.name for m in pkgutil.iter_modules(ecr_kubelet.__path__)):
            if module != "__main__":  # that one runs the program
                importlib.import_module(f"ecr_kubelet.{module}")
        from ecr_kubelet.awsapi import new_session

        session = new_session()
        for service in services:
            session.create_client(service, region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                                  aws_secret_access_key="not-a-secret")
    finally:
        _compiler.compile = compile_source
    return table


def write(path: str, table: dict[tuple[str | bytes, int], Entry]) -> None:
    with open(path, "wb") as fh:
        fh.write(marshal.dumps((_stamp(), table), MARSHAL_VERSION))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: re_cache.py OUT SERVICE...")
    write(sys.argv[1], record(sys.argv[2:]))
