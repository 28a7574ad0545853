"""The binary's compiled regular expressions (ecr_kubelet/compiled_re.py, recorded by
packaging/re_cache.py) are exactly what re compiles from their source."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ecr_kubelet import compiled_re
from frozen import prelude

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "packaging" / "re_cache.py"
_compiler, _sre = compiled_re.engine()


def _record(out: Path, *services: str) -> tuple[Any, dict[tuple[str | bytes, int], Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "AWS_CONFIG_FILE": os.devnull}
    subprocess.run([sys.executable, str(SCRIPT), str(out), *services], env=env, check=True, timeout=120)
    stamp, table = marshal.loads(out.read_bytes())
    return stamp, table


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("re-cache") / "table"
    _record(out, "ecr", "sts")
    return out


def test_every_recorded_pattern_is_what_re_compiles_from_its_source(recorded: Path) -> None:
    stamp, table = marshal.loads(recorded.read_bytes())
    assert stamp == (sys.version, _sre.MAGIC, _sre.CODESIZE)
    # What the run compiles: urllib3's URL grammar, botocore's, the standard library's.
    assert len(table) > 80
    for (pattern, flags), (final_flags, code, groups, groupindex, indexgroup) in table.items():
        cached = _sre.compile(pattern, final_flags, code, groups, groupindex, indexgroup)
        fresh = _compiler.compile(pattern, flags)
        # Pattern equality compares the pattern, flags and compiled code.
        assert cached == fresh and cached.groups == fresh.groups and cached.groupindex == fresh.groupindex, pattern


def test_recording_twice_writes_the_same_bytes(recorded: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    _record(again, "ecr", "sts")
    assert again.read_bytes() == recorded.read_bytes()  # release builds are reproducible


INSTALLED = """
    import re
    from ecr_kubelet import compiled_re
    print(compiled_re.install({table!r}))
    re.purge()  # nothing from re's own cache
    def parse(*args):
        raise RuntimeError("compiled from source")
    compiler, _sre = compiled_re.engine()
    (compiler._parser if hasattr(compiler, "_parser") else compiler.sre_parse).parse = parse
    for pattern in {patterns!r}:
        try:
            print(re.compile(pattern).pattern == pattern)
        except RuntimeError as exc:
            print(exc)
"""


def _installed(table: Path, patterns: list[str | bytes]) -> list[str]:
    code = textwrap.dedent(INSTALLED.format(table=str(table), patterns=patterns))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_installed_recorded_patterns_skip_the_compiler_and_others_use_it(recorded: Path) -> None:
    _stamp, table = marshal.loads(recorded.read_bytes())
    known = next(p for p, flags in table if isinstance(p, str) and flags == 0 and (p.encode(), 0) not in table)
    as_bytes = known.encode()  # the same text as bytes is another pattern
    assert _installed(recorded, [known, "(?P<unrecorded>x+)y", as_bytes]) == [
        "True", "True", "compiled from source", "compiled from source",
    ]


def test_a_table_from_another_python_is_ignored(recorded: Path, tmp_path: Path) -> None:
    _stamp, table = marshal.loads(recorded.read_bytes())
    foreign = tmp_path / "foreign"
    foreign.write_bytes(marshal.dumps((("3.0.0 (other)", _sre.MAGIC, _sre.CODESIZE), table), 2))
    known = next(p for p, flags in table if isinstance(p, str) and flags == 0)
    assert _installed(foreign, [known]) == ["False", "compiled from source"]
    (tmp_path / "garbage").write_bytes(b"not a table")
    assert _installed(tmp_path / "garbage", [known]) == ["False", "compiled from source"]
    assert _installed(tmp_path / "missing", [known]) == ["False", "compiled from source"]


PARSED = """
    from ecr_kubelet import compiled_re
    compiler, _sre = compiled_re.engine()
    parser = compiler._parser if hasattr(compiler, "_parser") else compiler.sre_parse
    parsed = []
    parse = parser.parse
    parser.parse = lambda p, *args: parsed.append(p) or parse(p, *args)
    from ecr_kubelet.awsapi import new_session
    for service in ("ecr", "sts"):
        new_session().create_client(service, region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE",
                                    aws_secret_access_key="not-a-secret")
    print(len(parsed), parsed[:5])
"""


def _parsed_by_a_miss(code: str) -> int:
    """How many patterns a cache miss's clients compile from source, in a fresh interpreter running `code` first."""
    proc = subprocess.run([sys.executable, "-c", code + textwrap.dedent(PARSED)], capture_output=True, text=True,
                          timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "AWS_CONFIG_FILE": os.devnull})
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split(" ", 1)[0])


def test_in_the_binary_a_cache_miss_compiles_no_pattern_from_source(recorded: Path, tmp_path: Path) -> None:
    """As frozen by PyInstaller (sys.frozen, the table in sys._MEIPASS, the interpreter the build
    recorded): awsapi installs the table before botocore, so creating the clients the table was
    recorded for parses no pattern."""
    (tmp_path / compiled_re.FILE).write_bytes(recorded.read_bytes())
    assert _parsed_by_a_miss(prelude(meipass=str(tmp_path))) == 0


def test_on_another_interpreter_than_the_recorded_one_or_outside_the_binary_re_compiles_as_usual(
    recorded: Path, tmp_path: Path
) -> None:
    (tmp_path / compiled_re.FILE).write_bytes(recorded.read_bytes())
    other = {"python": sys.version + " (another build)", "botocore": "0", "urllib3": "0"}
    assert _parsed_by_a_miss(prelude(other, meipass=str(tmp_path))) > 50
    assert _parsed_by_a_miss(f"import sys\nsys._MEIPASS = {str(tmp_path)!r}\n") > 50  # a pip install

