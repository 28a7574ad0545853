"""Checks on the binary built by scripts/build-binary (or a release binary from scripts/release).

The binary is ``dist/ecr-credential-provider`` or ``$ECR_KUBELET_TEST_BINARY``; every test here is
skipped when it is not built (and fails instead under CI=true). Two formats are understood: the
default unpack-once launcher (packaging/launcher.c, linked statically, with a zlib-compressed
PyInstaller one-dir tree appended by packaging/make-bundle.py) and the classic PyInstaller one-file
build (``build-binary --onefile``).

No glibc floor on the node: the launcher is static and the bundle carries its own glibc (loader,
libc and every library any file needs), checked here with pyelftools against a fixed version, the
glibc of the Debian 12 build roots, whatever the machine running the tests has.
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bundle import Bundle
from ecr_kubelet import __version__
from helpers import StubClient, make_request

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "packaging"))
from carry_libc import check_closure, elf_info, glibc_version  # noqa: E402

# The glibc that release binaries carry: Debian 12's (scripts/release builds in bookworm roots).
# Fixed here on purpose: a build that picked up a newer library, or a newer root, fails until this
# line and the docs are changed with it.
CARRIED_GLIBC = (2, 36)
MAX_SIZE_BYTES = 20 * 1000 * 1000
BOTOCORE_SERVICES = {"ecr", "ecr-public", "sts", "eks-auth", "sso", "sso-oidc", "signin"}


# ---- what the binary needs from the node: nothing but the kernel --------------------------------


def test_launcher_is_static(bundle: Bundle, tmp_path: Path) -> None:
    """The outer executable has no loader and no shared library: no C library is taken from the node."""
    if not bundle.launcher:
        pytest.skip("a PyInstaller one-file build (--onefile) needs the node's glibc")
    outer = tmp_path / "launcher"
    outer.write_bytes(bundle.outer())
    info = elf_info(outer)
    assert info is not None
    assert info.interp is None, f"the launcher asks for a dynamic loader: {info.interp}"
    assert info.needed == [], f"the launcher needs shared libraries: {info.needed}"
    assert glibc_version(info.required_versions) == (0,)


def test_bundle_carries_every_library_it_needs(launcher: Bundle, tmp_path: Path) -> None:
    tree = launcher.write_tree(tmp_path / "tree")
    loader = Path(launcher.loader)
    assert loader.parent.as_posix() == launcher.libdir
    assert re.fullmatch(r"ld-linux-(x86-64|aarch64)\.so\.[12]", loader.name), loader.name
    assert check_closure(tree, launcher.libdir, loader.name) == []


def test_bundle_carries_the_release_glibc_and_needs_no_newer(launcher: Bundle, tmp_path: Path) -> None:
    """Against a fixed version, not this machine's: every ELF file's GLIBC_x.y needs are at most
    what the carried libc defines, and that is the build roots' glibc."""
    tree = launcher.write_tree(tmp_path / "tree")
    libc = elf_info(tree / launcher.libdir / "libc.so.6")
    assert libc is not None
    assert glibc_version(libc.defined_versions) == CARRIED_GLIBC
    worst = {}
    checked = 0
    for entry in launcher.entries:
        if entry.kind == "binary":
            info = elf_info(tree / entry.path)
            assert info is not None, entry.path
            checked += 1
            if glibc_version(info.required_versions) > CARRIED_GLIBC:
                worst[entry.path] = glibc_version(info.required_versions)
    assert checked > 10
    assert not worst, worst


def test_closure_check_finds_a_missing_library_and_a_newer_glibc(launcher: Bundle, tmp_path: Path) -> None:
    """The check itself can fail: remove a library, and lower the carried libc's versions."""
    tree = launcher.write_tree(tmp_path / "tree")
    loader = Path(launcher.loader).name
    (tree / launcher.libdir / "libssl.so.3").unlink()
    problems = check_closure(tree, launcher.libdir, loader)
    assert any("needs libssl.so.3" in p for p in problems), problems
    # A library that asks for a glibc newer than the carried one (its version string patched).
    for entry in launcher.entries:
        info = elf_info(tree / entry.path) if entry.kind == "binary" and "libc.so" not in entry.name else None
        wanted = sorted(v for v in (info.required_versions if info else ()) if re.fullmatch(r"GLIBC_2\.\d\d", v))
        if wanted:
            target = tree / entry.path
            target.write_bytes(target.read_bytes().replace(wanted[0].encode() + b"\0", b"GLIBC_9.99\0"))
            break
    else:
        pytest.fail("no bundled library asks for a GLIBC_2.NN version")
    problems = check_closure(tree, launcher.libdir, loader)
    assert any(p.startswith(f"{entry.path} needs GLIBC_9.99") for p in problems), problems


def test_binary_size_and_contents(binary: Path, bundle: Bundle) -> None:
    size = binary.stat().st_size
    assert size <= MAX_SIZE_BYTES, f"{binary.name} is {size / 1e6:.1f} MB (target <= 20 MB)"
    names = [e.name for e in bundle.entries]
    botocore_data = [n for n in names if n.startswith("botocore/data/")]
    services = {n.split("/")[2] for n in botocore_data if n.count("/") >= 4}
    assert services == BOTOCORE_SERVICES, f"unexpected botocore services bundled: {sorted(services)}"
    for service in services:
        versions = {n.split("/")[3] for n in botocore_data if n.split("/")[2] == service and n.count("/") >= 4}
        assert len(versions) == 1, f"{service}: more than one API version bundled: {sorted(versions)}"
    top = {n.rsplit("/", 1)[1] for n in botocore_data if n.count("/") == 2}
    assert {"endpoints.json", "partitions.json", "sdk-default-configuration.json", "_retry.json"} <= top
    endpoints = json.loads(next(e.data for e in bundle.entries if e.name == "botocore/data/endpoints.json"))
    for partition in endpoints["partitions"]:
        assert len(partition["services"]) <= len(BOTOCORE_SERVICES), "endpoints.json is not trimmed"
    unwanted = [n for n in names if n.startswith(("boto3/", "cryptography", "s3transfer/")) or "_tkinter" in n]
    assert not unwanted, f"unused packages bundled: {unwanted}"


def test_bundle_imports_our_modules_from_one_table_of_the_archives_own_code(launcher: Bundle, tmp_path: Path) -> None:
    """packaging/entry.py imports every module of ours (and __future__) from one table, the spec's copy of the
    code objects in PyInstaller's bytecode archive: the same modules, without PyInstaller's importer."""
    from entry import MODULES_FILE
    from PyInstaller.archive.readers import CArchiveReader  # type: ignore[import-untyped]

    data = next((e.data for e in launcher.entries if e.name == MODULES_FILE), None)
    assert data is not None, f"no {MODULES_FILE} in the bundle"
    table = marshal.loads(data)
    ours = {"ecr_kubelet" if p.stem == "__init__" else f"ecr_kubelet.{p.stem}"
            for p in (ROOT / "src" / "ecr_kubelet").glob("*.py") if p.stem != "__main__"}  # `python -m` only
    assert set(table["modules"]) == ours | {"ecr_kubelet._build_info", "__future__"}
    assert table["magic"] == importlib.util.MAGIC_NUMBER  # the same Python minor version as the tests'
    program = tmp_path / "program"
    program.write_bytes(next(e.data for e in launcher.entries if e.path == launcher.entry))
    archive = CArchiveReader(str(program)).open_embedded_archive("PYZ.pyz")
    for name, (is_package, code) in table["modules"].items():
        assert code == archive.extract(name, raw=True), name
        assert is_package == (name == "ecr_kubelet"), name


def test_version_prints_version_and_commit(binary: Path, tmp_path: Path) -> None:
    env = {**os.environ, "ECR_KUBELET_RUNTIME_DIR": str(tmp_path / "runtime")}  # not /var/cache as root
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    m = re.fullmatch(r"ecr-credential-provider (\S+) \(commit (\S+)\)\n", proc.stdout)
    assert m, f"unexpected --version output: {proc.stdout!r}"
    assert m.group(1) == __version__
    assert m.group(2) != "dev", "the binary has no build info (scripts/build-binary writes _build_info.py)"
    assert re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?|unknown", m.group(2)), m.group(2)


def test_binary_answers_from_the_stub_then_from_its_cache(
    binary: Path, stub: StubClient, provider_env: dict[str, str]
) -> None:
    request = (json.dumps(make_request("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app")) + "\n").encode()
    outputs = []
    for _ in range(2):
        proc = subprocess.run([str(binary)], input=request, env=provider_env, capture_output=True, timeout=60,
                              check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        outputs.append(json.loads(proc.stdout))
    assert outputs[0]["auth"] == outputs[1]["auth"]
    assert "123456789012.dkr.ecr.us-east-1.amazonaws.com" in outputs[0]["auth"]
    assert len(stub.calls(action="GetAuthorizationToken")) == 1


