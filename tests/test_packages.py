"""The .deb and .rpm packages from scripts/release (scripts/package, nfpm): metadata, contents, and
the whole life cycle in a disposable copy of a bare Debian 11 root (scripts/in-root --overlay):
install over an existing binary and kubelet config, answer a request, upgrade to a version with
another bundle, answer again, purge; nothing of the package, its runtime directories or its token
cache is left, and what was there before is back. The rpm is installed with `rpm --root`.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bundle import Bundle
from helpers import RELEASE_DIR, StubClient, make_request, require_built

ROOT = Path(__file__).resolve().parent.parent
RELEASE = RELEASE_DIR
VERSION = next(line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines()
               if line.startswith("version = "))
RPM_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
BIN = "/usr/libexec/ecr-kubelet/ecr-credential-provider"
LINK = "/etc/eks/image-credential-provider/ecr-credential-provider"




def deb(arch: str) -> Path:
    return require_built(RELEASE / f"ecr-kubelet_{VERSION}-1_{arch}.deb", "run scripts/release")


def rpm(arch: str) -> Path:
    return require_built(RELEASE / f"ecr-kubelet-{VERSION}-1.{RPM_ARCH[arch]}.rpm", "run scripts/release")


def debian11_root(arch: str) -> Path:
    rel = f"build/roots/bullseye-{arch}"
    return require_built(ROOT / rel, f"scripts/make-root bullseye {arch} {rel}")


@pytest.fixture(scope="module")
def upgrades(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A next version's packages for each architecture: the same program with another bundle id
    (one more file in the payload), so the upgrade has old runtime directories to prune."""
    out = tmp_path_factory.mktemp("upgrade")
    for arch in RPM_ARCH:
        binary = RELEASE / f"ecr-credential-provider-linux-{arch}"
        if not binary.exists():
            continue
        bundle = Bundle(binary)
        tree = bundle.write_tree(out / f"tree-{arch}")
        (tree / bundle.libdir / "upgrade-marker.txt").write_text("next version\n")
        launcher = out / f"launcher-{arch}"
        launcher.write_bytes(bundle.outer())
        nxt = out / f"ecr-credential-provider-linux-{arch}"
        subprocess.run([sys.executable, str(ROOT / "packaging/make-bundle.py"), str(launcher), str(tree), str(nxt),
                        "--libdir", bundle.libdir], check=True, capture_output=True)
        subprocess.run([str(ROOT / "scripts/package"), "--binary", str(nxt), "--arch", arch, "--version", "99.0.0",
                        "--out", str(out)], check=True, capture_output=True)
    return {p.name: p for p in out.iterdir() if p.suffix in (".deb", ".rpm")}


# ---- metadata and contents ---------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(RPM_ARCH))
def test_deb_metadata_and_contents(arch: str) -> None:
    info = subprocess.run(["dpkg-deb", "--field", str(deb(arch))], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line and not line.startswith(" "))
    assert fields["Package"] == "ecr-kubelet"
    assert fields["Version"] == f"{VERSION}-1"
    assert fields["Architecture"] == arch
    assert fields["Maintainer"] and fields["Homepage"].startswith("https://")
    assert fields["Description"].startswith("Kubelet image credential provider for Amazon ECR")
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb(arch))], capture_output=True, text=True,
                             check=True).stdout
    paths = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    assert BIN in paths
    assert "/usr/share/doc/ecr-kubelet/copyright" in paths
    assert "/usr/share/doc/ecr-kubelet/examples/eks-default.json" in paths
    assert not any(p.startswith("/etc/") for p in paths), "a package must never ship a kubelet config"
    bin_line = next(line for line in listing.splitlines() if line.endswith(BIN))
    assert bin_line.startswith("-rwxr-xr-x root/root")


@pytest.mark.parametrize("arch", list(RPM_ARCH))
def test_rpm_metadata_and_contents(arch: str) -> None:
    query = "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}|%{URL}|%{SUMMARY}|%{PACKAGER}\n"
    proc = subprocess.run(["rpm", "-qp", "--queryformat", query, str(rpm(arch))], capture_output=True, text=True,
                          check=True)
    name, version, release, rarch, lic, url, summary, packager = proc.stdout.strip().split("|")
    assert (name, version, release, rarch, lic) == ("ecr-kubelet", VERSION, "1", RPM_ARCH[arch], "Apache-2.0")
    assert url.startswith("https://") and summary.startswith("Kubelet image credential provider") and packager
    files = subprocess.run(["rpm", "-qlp", str(rpm(arch))], capture_output=True, text=True, check=True).stdout.split()
    assert BIN in files and not any(f.startswith("/etc/") for f in files)
    scripts = subprocess.run(["rpm", "-qp", "--scripts", str(rpm(arch))], capture_output=True, text=True,
                             check=True).stdout
    assert "postinstall scriptlet" in scripts and "preuninstall scriptlet" in scripts


# ---- the life cycle ----------------------------------------------------------------------------

# Run inside the disposable root; prints one "state" line per phase for the test to read.
LIFECYCLE = r"""
set -eu
install="$1"; upgrade="$2"; remove="$3"; first="$4"; second="$5"; request="$6"
state() {
    e=/etc/eks/image-credential-provider
    c=/var/cache/ecr-credential-provider
    printf 'state %s link=%s orig=%s bin=%s runtime=%s cache=%s config=%s\n' "$1" \
        "$(readlink $e/ecr-credential-provider 2>/dev/null || cat $e/ecr-credential-provider 2>/dev/null || echo -)" \
        "$(cat $e/ecr-credential-provider.orig-ecr-kubelet 2>/dev/null || echo -)" \
        "$(test -e /usr/libexec/ecr-kubelet && echo present || echo -)" \
        "$(ls $c/runtime 2>/dev/null | grep -v '\.' | tr '\n' , || true)" \
        "$(test -e $c && find $c -maxdepth 1 -type f | wc -l || echo -)" \
        "$(cat $e/config.json 2>/dev/null || echo -)"
}
mkdir -p /etc/eks/image-credential-provider
printf 'old-binary' > /etc/eks/image-credential-provider/ecr-credential-provider
printf 'kept-config' > /etc/eks/image-credential-provider/config.json
state before
$install "$first"
state installed
printf '%s\n' "$request" | /etc/eks/image-credential-provider/ecr-credential-provider > /tmp/answer1.json
state ran
$upgrade "$second"
state upgraded
printf '%s\n' "$request" | /etc/eks/image-credential-provider/ecr-credential-provider > /tmp/answer2.json
state ran-again
$remove
state removed
"""


def lifecycle(arch: str, tool: str, first: Path, second: Path, provider_env: dict[str, str],
              tmp_path: Path) -> dict[str, dict[str, str]]:
    env = {k: v for k, v in provider_env.items() if k not in ("ECR_KUBELET_CACHE_DIR", "ECR_KUBELET_RUNTIME_DIR")}
    request = json.dumps(make_request("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app"))
    pkgs = tmp_path / "pkgs"
    pkgs.mkdir()
    for p in (first, second):
        (pkgs / p.name).write_bytes(p.read_bytes())
    if tool == "dpkg":
        steps = ["dpkg -i", "dpkg -i", "dpkg --purge ecr-kubelet"]
        cmd = [str(ROOT / "scripts/in-root"), "--bind", str(tmp_path), "--overlay", str(tmp_path / "ovl"),
               str(debian11_root(arch)), "sh", "-c", LIFECYCLE, "lifecycle", *steps,
               str(pkgs / first.name), str(pkgs / second.name), request]
    else:
        # rpm from the host into the root (--root); the scriptlets run inside it (chroot).
        merged = tmp_path / "ovl" / "merged"
        rpm_cmd = f"rpm --root {merged} --nodeps --ignorearch"
        steps = [f"{rpm_cmd} -i", f"{rpm_cmd} -U", f"rpm --root {merged} -e ecr-kubelet"]
        inner = LIFECYCLE.replace("/etc/eks", f"{merged}/etc/eks").replace("/var/cache", f"{merged}/var/cache") \
            .replace("/usr/libexec", f"{merged}/usr/libexec")
        # The binary itself must run inside the root: its path there is the same as on the host.
        inner = inner.replace(f'| {merged}/etc/eks/image-credential-provider/ecr-credential-provider >',
                              f'| chroot {merged} /etc/eks/image-credential-provider/ecr-credential-provider >')
        script = (
            f'set -e; mount --make-rprivate /; mkdir -p {tmp_path}/ovl/upper {tmp_path}/ovl/work {merged}; '
            f'mount -t overlay overlay -o lowerdir={debian11_root(arch)},upperdir={tmp_path}/ovl/upper,'
            f'workdir={tmp_path}/ovl/work {merged}; mount -t proc proc {merged}/proc; '
            f'mkdir -p {merged}{tmp_path}; mount --bind {tmp_path} {merged}{tmp_path}; '
            f'rpm --root {merged} --initdb; exec sh -c {shlex.quote(inner)} lifecycle "$@"'
        )
        cmd = ["unshare", "-m", "sh", "-c", script, "x", *steps, str(pkgs / first.name), str(pkgs / second.name),
               request]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    states = {}
    for line in proc.stdout.splitlines():
        if line.startswith("state "):
            phase, *pairs = line.split()[1:]
            states[phase] = dict(p.split("=", 1) for p in pairs)
    return states


def check_lifecycle(states: dict[str, dict[str, str]], first: Bundle, second: Bundle) -> None:
    assert states["before"]["link"] == "old-binary"
    inst = states["installed"]
    assert inst["link"] == BIN and inst["orig"] == "old-binary" and inst["config"] == "kept-config"
    assert inst["runtime"] == f"{first.id},", "the post-install run unpacks the bundle"
    assert int(states["ran"]["cache"]) >= 1, "the request must have left a token in the cache"
    up = states["upgraded"]
    assert up["link"] == BIN and up["orig"] == "old-binary"
    assert up["runtime"] == f"{second.id},", "the upgrade must prune the old version's bundle"
    gone = states["removed"]
    assert gone["link"] == "old-binary" and gone["orig"] == "-", "the binary that was there is put back"
    assert gone["bin"] == "-" and gone["runtime"] == "" and gone["cache"] == "-"
    assert gone["config"] == "kept-config", "the kubelet config is never touched"


@pytest.mark.parametrize("arch", list(RPM_ARCH))
def test_deb_install_run_upgrade_purge_in_debian_11(
    arch: str, upgrades: dict[str, Path], stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    package = deb(arch)  # skips (fails in CI) without scripts/release, before asking for the upgrade
    nxt = upgrades.get(f"ecr-kubelet_99.0.0-1_{arch}.deb")
    assert nxt is not None, "the upgrade package was not built"
    states = lifecycle(arch, "dpkg", package, nxt, provider_env, tmp_path)
    check_lifecycle(states, Bundle(RELEASE / f"ecr-credential-provider-linux-{arch}"),
                    Bundle(nxt.parent / f"ecr-credential-provider-linux-{arch}"))
    assert len(stub.calls(action="GetAuthorizationToken")) == 1, "the second run after the upgrade is a cache hit"


@pytest.mark.parametrize("arch", list(RPM_ARCH))
def test_rpm_install_run_upgrade_erase_with_rpm_root(
    arch: str, upgrades: dict[str, Path], stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    package = rpm(arch)  # skips (fails in CI) without scripts/release, before asking for the upgrade
    nxt = upgrades.get(f"ecr-kubelet-99.0.0-1.{RPM_ARCH[arch]}.rpm")
    assert nxt is not None, "the upgrade package was not built"
    states = lifecycle(arch, "rpm", package, nxt, provider_env, tmp_path)
    check_lifecycle(states, Bundle(RELEASE / f"ecr-credential-provider-linux-{arch}"),
                    Bundle(nxt.parent / f"ecr-credential-provider-linux-{arch}"))


# ---- a binary forced over the package's link ---------------------------------------------------

FORCED = r"""
set -eu
first="$1"; second="$2"; installer="$3"; forced="$4"
e=/etc/eks/image-credential-provider
show() { # one word: link:<target> or file:<its last line>
    if [ -L "$1" ]; then echo "link:$(readlink "$1")"; else echo "file:$(tail -n1 "$1" | tr ' ' _)"; fi
}
mkdir -p "$e"
printf 'old-binary\n' > "$e/ecr-credential-provider"
dpkg -i "$first" >/dev/null
echo "installed $(show "$e/ecr-credential-provider")"
bash "$installer" --binary "$forced" --no-dropin --force >/dev/null
echo "forced $(show "$e/ecr-credential-provider")"
dpkg -i "$second" >/dev/null 2>/tmp/upgrade.err
echo "upgraded $(show "$e/ecr-credential-provider") warned=$(grep -c "not the package's link" /tmp/upgrade.err || true)"
dpkg --purge ecr-kubelet >/dev/null 2>&1
echo "removed $(show "$e/ecr-credential-provider") orig=$(show "$e/ecr-credential-provider.orig-ecr-kubelet")"
"""


@pytest.mark.parametrize("arch", list(RPM_ARCH))
def test_an_upgrade_keeps_a_binary_forced_over_the_package_link(arch: str, upgrades: dict[str, Path],
                                                                tmp_path: Path) -> None:
    """install.sh --force takes the path over from the package; a later upgrade (and the removal)
    leaves the forced binary in place, and the binary found before the package stays kept."""
    package = deb(arch)
    nxt = upgrades.get(f"ecr-kubelet_99.0.0-1_{arch}.deb")
    assert nxt is not None, "the upgrade package was not built"
    work = tmp_path / "work"
    work.mkdir()
    for p in (package, nxt, ROOT / "deploy/node/install.sh"):
        (work / p.name).write_bytes(p.read_bytes())
    (work / "forced").write_text("#!/bin/sh\necho forced-binary\n")
    cmd = [str(ROOT / "scripts/in-root"), "--bind", str(tmp_path), "--overlay", str(tmp_path / "ovl"),
           str(debian11_root(arch)), "sh", "-c", FORCED, "forced", str(work / package.name), str(work / nxt.name),
           str(work / "install.sh"), str(work / "forced")]
    proc = subprocess.run(cmd, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    states = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines() if line}
    assert states["installed"] == [f"link:{BIN}"]
    assert states["forced"] == ["file:echo_forced-binary"]
    assert states["upgraded"] == ["file:echo_forced-binary", "warned=1"], "the upgrade replaced the forced binary"
    assert states["removed"] == ["file:echo_forced-binary", "orig=file:old-binary"]
