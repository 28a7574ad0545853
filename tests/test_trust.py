"""The directory-trust rule has two copies, src/ecr_kubelet/trust.py and the launcher's trusted_dir()
(packaging/launcher.c, which runs before Python): every layout of tests/trust_cases.py must get the
table's verdict from both, for the same reason, with the same directories created and nothing
created where the verdict is "refused".

The launcher is the built one (the `launcher` fixture) with a payload of three entries whose
"loader" is a shell script printing its own path: where it ran from is the launcher's verdict.
Run as root, since the layouts hold another user's entries.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from bundle import Bundle
from ecr_kubelet import trust
from test_launcher import NOBODY, SHARED, crafted, entries, launcher_env
from trust_cases import CASES, REFUSED, TRUSTED

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the layouts hold another user's entries: run as root")

Snapshot = dict[str, tuple[str, int, int]]
PROBE_NAMES = ("program", "loader", "lib")
# The warning, then (on the first fallback run) the unpack into the shared fallback tree.
FALLBACK = re.compile(r"ecr-credential-provider: warning: not using the persistent runtime directory "
                      r"\((.*)\); unpacking into a temporary directory\n"
                      r"(?:ecr-credential-provider: unpacked the bundle into [^\n]+\n)?")


def build(top: Path, layout: list[str]) -> None:
    """The layout (see tests/trust_cases.py) in `top`, a new directory of root's (0755)."""
    top.mkdir()
    top.chmod(0o755)
    for spec in layout:
        if " -> " in spec:
            name, rest = spec.split(" -> ")
            target, *owner = rest.split()
            path = top / name
            path.symlink_to(target.replace("{top}", str(top)))
        else:
            name, mode, *owner = spec.split()
            path = top / name.rstrip("/")
            if name.endswith("/"):
                path.mkdir()
            else:
                path.write_text("")
            path.chmod(int(mode, 8))
        if owner:
            assert owner == ["nobody"], spec
            os.lchown(path, NOBODY, NOBODY)


def snapshot(top: Path, used: str | None) -> Snapshot:
    """Every entry under `top` (type, mode, owner), but not what was written inside the directory used."""
    found: Snapshot = {}
    for parent, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(parent, name)
            info = os.lstat(path)
            kind = "link" if stat.S_ISLNK(info.st_mode) else "dir" if stat.S_ISDIR(info.st_mode) else "file"
            found[os.path.relpath(path, top)] = (kind, stat.S_IMODE(info.st_mode), info.st_uid)
        dirs[:] = [d for d in dirs if os.path.join(parent, d) != used]
    return found


def python_verdict(path: str) -> tuple[str, str]:
    """(TRUSTED, the directory used) or (REFUSED, why)."""
    try:
        return TRUSTED, trust.trusted_directory(path, create=True)
    except trust.Untrusted as exc:
        return REFUSED, str(exc)


@pytest.fixture(scope="module")
def probe(launcher: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built launcher with a payload that prints where it was unpacked."""
    script = b'#!/bin/sh\nprintf "%s\\n" "$0"\n'
    records = [(b"D", "lib", 0o755, b""), (b"F", "program", 0o644, b""), (b"F", "loader", 0o755, script)]
    return crafted(launcher, records, tmp_path_factory.mktemp("probe") / "probe", PROBE_NAMES)


def launcher_verdict(probe: Path, path: str, scratch: Path) -> tuple[str, str]:
    """(TRUSTED, the directory used) or (REFUSED, why), from what the probe ran and said at -v."""
    proc = subprocess.run([str(probe), "-v"], env=launcher_env(None, scratch, ECR_KUBELET_RUNTIME_DIR=path),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    loader = proc.stdout.rstrip("\n")
    if loader.startswith(f"{scratch}/"):
        assert entries(scratch) == {SHARED}, "the fallback runs from the shared tree"
        match = FALLBACK.fullmatch(proc.stderr)
        assert match, proc.stderr
        return REFUSED, match[1]
    assert re.fullmatch(r"(ecr-credential-provider: unpacked the bundle into [^\n]+\n)?", proc.stderr), proc.stderr
    bundle_dir = os.path.dirname(loader)
    assert loader == f"{bundle_dir}/loader", proc.stdout
    return TRUSTED, os.path.dirname(bundle_dir)


def relative(verdict: tuple[str, str], top: Path) -> tuple[str, str]:
    """The verdict with the layout's own directory left out of its paths (two copies of a layout differ there)."""
    return verdict[0], verdict[1].replace(str(top), "TOP")


@pytest.mark.parametrize(("layout", "path", "expected"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_trust_py(tmp_path: Path, layout: list[str], path: str, expected: str) -> None:
    top = tmp_path / "layout"
    build(top, layout)
    before = snapshot(top, None)
    verdict, detail = python_verdict(f"{top}/{path}")
    assert verdict == expected, detail
    if verdict == TRUSTED:
        assert detail == os.path.realpath(f"{top}/{path}") and os.path.isdir(detail)
    else:
        assert snapshot(top, None) == before, "created something for a refused path"


@pytest.mark.parametrize(("layout", "path", "expected"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_the_launcher_agrees(probe: Path, tmp_path: Path, layout: list[str], path: str, expected: str) -> None:
    c_top, py_top, scratch = tmp_path / "c", tmp_path / "py", tmp_path / "tmp"
    scratch.mkdir()
    for top in (c_top, py_top):
        build(top, layout)
    before = snapshot(c_top, None)
    c = launcher_verdict(probe, f"{c_top}/{path}", scratch)
    py = python_verdict(f"{py_top}/{path}")
    assert relative(c, c_top) == relative(py, py_top)
    assert c[0] == expected, c[1]
    used = c[1] if c[0] == TRUSTED else None
    assert snapshot(c_top, used) == snapshot(py_top, py[1] if used else None)
    if c[0] == REFUSED:
        assert snapshot(c_top, None) == before, "the launcher wrote under a refused path"


@pytest.mark.parametrize("shared", [False, True], ids=["link in a trusted directory", "link others can replace"])
def test_the_launcher_checks_tmpdir_as_configured(probe: Path, tmp_path: Path, shared: bool) -> None:
    """The fallback's TMPDIR gets the same rule (as a directory we create our own entry in)."""
    build(tmp_path / "t", ["real/ 0700", f"links/ {'0777' if shared else '0755'}", "links/tmp -> ../real",
                           "refused/ 0777"])
    real = tmp_path / "t" / "real"
    env = launcher_env(tmp_path / "t" / "refused" / "runtime", tmp_path / "t" / "links" / "tmp")
    proc = subprocess.run([str(probe)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{real}/ecr-credential-provider-") != shared, proc.stdout
    assert entries(real) == ({SHARED} if not shared else set()), "the fallback runs from the shared tree"
