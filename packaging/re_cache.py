"""Record the binary's table of compiled regular expressions (ecr_kubelet/compiled_re.py).

    python packaging/re_cache.py OUT SERVICE...

Run by the spec with the bundle's own Python: imports every ``ecr_kubelet`` module and creates a
botocore client of each SERVICE (what a run compiles), records what ``re`` hands
``_sre.compile`` for each pattern, and writes the table to OUT.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from typing import Any

from ecr_kubelet import compiled_re, stand_ins

_compiler, _sre = compiled_re.engine()


def record(services: list[str]) -> compiled_re.Table:
    table: compiled_re.Table = {}
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
    stand_ins.install(None)  # as in the binary: what the stand-ins keep out compiles nothing
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


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: re_cache.py OUT SERVICE...")
    with open(sys.argv[1], "wb") as out:
        out.write(compiled_re.dumps(record(sys.argv[2:])))
