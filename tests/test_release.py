"""The release binaries from scripts/release: both architectures, checksums, reproducibility, and
a smoke run of each inside a bare Debian 11 root of its own architecture (glibc 2.31, no Python,
no CA bundle) against the local stub: a miss, a cache hit, service-account mode.

The full end-to-end suite also runs against each release binary inside those roots (scripts/test:
ECR_KUBELET_TEST_BINARY + ECR_KUBELET_TEST_ROOT). Outside CI, tests whose inputs are not built are
skipped; under CI=true they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bundle import Bundle
from helpers import RELEASE_DIR, StubClient, make_jwt, make_request, require_built

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "packaging"))
from carry_libc import elf_files, elf_info  # noqa: E402

RELEASE = RELEASE_DIR
ARCHES = {"amd64": "EM_X86_64", "arm64": "EM_AARCH64"}




def release_binary(arch: str) -> Path:
    return require_built(RELEASE / f"ecr-credential-provider-linux-{arch}", "run scripts/release")


def test_release_directory_has_both_binaries_and_valid_checksums() -> None:
    sums = require_built(RELEASE / "SHA256SUMS", "run scripts/release")
    listed = {line.split()[1] for line in sums.read_text().splitlines()}
    assert {f"ecr-credential-provider-linux-{a}" for a in ARCHES} <= listed
    on_disk = {p.name for p in RELEASE.iterdir() if p.is_file() and p.name != "SHA256SUMS"}
    assert listed == on_disk, "SHA256SUMS must cover every artifact and nothing else"
    proc = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=RELEASE, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("arch", list(ARCHES))
def test_each_binary_is_built_for_its_architecture(arch: str, tmp_path: Path) -> None:
    """Built natively for that machine (launcher and every bundled ELF file), not cross-labelled."""
    bundle = Bundle(release_binary(arch))
    outer = tmp_path / "launcher"
    outer.write_bytes(bundle.outer())
    info = elf_info(outer)
    assert info is not None and info.machine == ARCHES[arch]
    assert info.interp is None and info.needed == [], "the launcher must be static"
    tree = bundle.write_tree(tmp_path / "tree")
    machines = {elf.machine for _path, elf in elf_files(tree)}
    assert machines == {ARCHES[arch]}


def test_two_releases_of_one_commit_are_identical(tmp_path: Path) -> None:
    """scripts/release again (amd64) gives the same bytes for every artifact: binary, SBOM, packages
    and installer image (no timestamps, paths or hash seeds)."""
    first = release_binary("amd64")
    proc = subprocess.run([str(ROOT / "scripts" / "release"), "--arch", "amd64", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    again = {p.name for p in tmp_path.iterdir() if p.is_file() and p.name != "SHA256SUMS"}
    assert {first.name, first.name + ".cdx.json"} <= again
    assert any(n.endswith(".deb") for n in again) and any(n.endswith(".oci.tar") for n in again)
    differ = [n for n in sorted(again) if (tmp_path / n).read_bytes() != (first.parent / n).read_bytes()]
    assert differ == [], f"scripts/release is not reproducible for {differ}"


# ---- inside a bare Debian 11 root ----------------------------------------------------------------


def in_root(
    arch: str, binary: Path, env: dict[str, str], stdin: bytes, *args: str
) -> subprocess.CompletedProcess[bytes]:
    rel = f"build/roots/bullseye-{arch}"
    root = require_built(ROOT / rel, f"scripts/make-root bullseye {arch} {rel}")
    glibc = subprocess.run([str(ROOT / "scripts" / "in-root"), str(root), "ldd", "--version"], capture_output=True,
                           text=True, check=False)
    assert "2.31" in glibc.stdout.splitlines()[0], "not a Debian 11 root"
    assert not (root / "usr" / "bin" / "python3").exists(), "the test root must not have Python"
    tmp = os.environ.get("TMPDIR") or "/tmp"
    cmd = [str(ROOT / "scripts" / "in-root"), "--bind", tmp, "--bind", str(binary.parent), str(root), str(binary),
           *args]
    return subprocess.run(cmd, input=stdin, env=env, capture_output=True, timeout=300, check=False)


@pytest.mark.parametrize("arch", list(ARCHES))
def test_binary_answers_a_miss_then_a_hit_inside_debian_11(
    arch: str, stub: StubClient, provider_env: dict[str, str]
) -> None:
    binary = release_binary(arch)
    image = "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/app"
    request = (json.dumps(make_request(image)) + "\n").encode()
    answers = []
    for _ in range(2):
        proc = in_root(arch, binary, provider_env, request)
        assert proc.returncode == 0, proc.stderr.decode()
        assert proc.stderr == b""
        answers.append(json.loads(proc.stdout))
    assert answers[0]["auth"] == answers[1]["auth"]
    assert set(answers[0]["auth"]) == {"123456789012.dkr.ecr.us-west-2.amazonaws.com"}
    assert len(stub.calls(action="GetAuthorizationToken")) == 1, "the second run must be a cache hit"


@pytest.mark.parametrize("arch", list(ARCHES))
def test_service_account_mode_inside_debian_11(arch: str, stub: StubClient, provider_env: dict[str, str]) -> None:
    binary = release_binary(arch)
    role = "arn:aws:iam::123456789012:role/team-app"
    request = make_request(
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app",
        serviceAccountToken=make_jwt(sub="system:serviceaccount:team:app"),
        serviceAccountAnnotations={"eks.amazonaws.com/role-arn": role},
    )
    proc = in_root(arch, binary, provider_env, (json.dumps(request) + "\n").encode())
    assert proc.returncode == 0, proc.stderr.decode()
    answer = json.loads(proc.stdout)
    assert set(answer["auth"]) == {"123456789012.dkr.ecr.eu-west-1.amazonaws.com"}
    [sts] = stub.calls("sts", "AssumeRoleWithWebIdentity")
    assert sts["role_arn"] == role
    [ecr] = stub.calls("ecr")
    assert ecr["access_key_id"] == sts["issued_access_key_id"], "the token must come from the assumed role"


@pytest.mark.parametrize("arch", list(ARCHES))
def test_credential_process_of_the_node_runs_inside_debian_11(
    arch: str, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    """The node's own programs (Debian 11's /bin/sh here) run as children without the bundle's glibc."""
    binary = release_binary(arch)
    helper = tmp_path / "creds.sh"
    helper.write_text('#!/bin/sh\necho \'{"Version": 1, "AccessKeyId": "AKIAPROCESS", "SecretAccessKey": "s"}\'\n')
    helper.chmod(0o755)
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\ncredential_process = {helper}\n")
    env = {k: v for k, v in provider_env.items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET"))}
    env["AWS_CONFIG_FILE"] = str(config)
    request = (json.dumps(make_request("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app")) + "\n").encode()
    proc = in_root(arch, binary, env, request)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["auth"]
