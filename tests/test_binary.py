"""Checks on the one-file binary built by scripts/build-binary.

The binary is ``dist/ecr-credential-provider`` or ``$ECR_KUBELET_TEST_BINARY``; every test here is
skipped when it is not built. glibc floor: the outer executable is PyInstaller's prebuilt
bootloader (built on manylinux2014, so it needs at most glibc 2.17); the libraries bundled
inside (libpython, extension modules, libssl, ...) come from the build machine and need that
machine's glibc. Release builds come from the Dockerfile's manylinux2014 stage and are checked with
``ECR_KUBELET_GLIBC_FLOOR=2.17``; without that variable the bundled libraries are checked against
the glibc of the machine running the tests (they must at least run here).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecr_kubelet import __version__
from helpers import StubClient, make_request

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED_FLOOR = (2, 17)  # docs/binary.md: "runs on glibc 2.17 and newer"
MAX_SIZE_BYTES = 20 * 1000 * 1000
BOTOCORE_SERVICES = {"ecr", "ecr-public", "sts", "sso", "sso-oidc", "signin"}

SHT_GNU_VERNEED = 0x6FFFFFFE
GLIBC_RE = re.compile(rb"^GLIBC_(\d+)\.(\d+)(?:\.(\d+))?$")


# ---- a small ELF reader: required symbol versions (SHT_GNU_verneed) ----------------------------


def elf_required_versions(data: bytes) -> set[str]:
    """Names of the symbol versions an ELF file requires (e.g. ``GLIBC_2.14``)."""
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
        sec_fmt, name_fields = end + "IIQQQQIIQQ", 10
    else:
        shoff, = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
        sec_fmt, name_fields = end + "IIIIIIIIII", 10
    sections = [
        struct.unpack_from(sec_fmt, data, shoff + i * shentsize)[:name_fields] for i in range(shnum)
    ]
    names: set[str] = set()
    for sec in sections:
        sh_type, sh_offset, sh_link, sh_info = sec[1], sec[4], sec[6], sec[7]
        if sh_type != SHT_GNU_VERNEED:
            continue
        strtab_off = sections[sh_link][4]
        pos = sh_offset
        for _ in range(sh_info):  # sh_info = number of Verneed entries
            _vn_version, vn_cnt, _vn_file, vn_aux, vn_next = struct.unpack_from(end + "HHIII", data, pos)
            aux = pos + vn_aux
            for _ in range(vn_cnt):
                _hash, _flags, _other, vna_name, vna_next = struct.unpack_from(end + "IHHII", data, aux)
                start = strtab_off + vna_name
                names.add(data[start : data.index(b"\0", start)].decode("ascii", "replace"))
                if vna_next == 0:
                    break
                aux += vna_next
            if vn_next == 0:
                break
            pos += vn_next
    return names


def max_glibc(versions: set[str]) -> tuple[int, ...]:
    found = [GLIBC_RE.match(v.encode()) for v in versions]
    return max((tuple(int(g) for g in m.groups() if g is not None) for m in found if m), default=(0,))


def fmt(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


# ---- a small reader for PyInstaller's embedded archive (CArchive) -------------------------------


COOKIE_MAGIC = b"MEI\014\013\012\013\016"
COOKIE_FMT = "!8sIIII64s"
TOC_ENTRY_FMT = "!IIIIBc"


@dataclass(frozen=True)
class Entry:
    name: str
    typecode: str
    offset: int
    length: int
    compressed: bool


class Bundle:
    """The entries PyInstaller's one-file bootloader extracts at start-up."""

    def __init__(self, path: Path) -> None:
        self.data = path.read_bytes()
        cookie_at = self.data.rfind(COOKIE_MAGIC)
        if cookie_at < 0:
            raise ValueError(f"{path} holds no PyInstaller archive")
        _magic, pkg_len, toc_off, toc_len, _pyver, _pylib = struct.unpack_from(COOKIE_FMT, self.data, cookie_at)
        self.start = cookie_at + struct.calcsize(COOKIE_FMT) - pkg_len
        self.entries: list[Entry] = []
        pos, end = self.start + toc_off, self.start + toc_off + toc_len
        head = struct.calcsize(TOC_ENTRY_FMT)
        while pos < end:
            entry_len, off, length, _ulen, flag, typecode = struct.unpack_from(TOC_ENTRY_FMT, self.data, pos)
            name = self.data[pos + head : pos + entry_len].rstrip(b"\0").decode()
            self.entries.append(Entry(name, typecode.decode(), off, length, bool(flag)))
            pos += entry_len

    def read(self, entry: Entry) -> bytes:
        raw = self.data[self.start + entry.offset : self.start + entry.offset + entry.length]
        return zlib.decompress(raw) if entry.compressed else raw

    def extracted(self) -> Iterator[Entry]:
        """Binaries ('b', 'e') and data files ('x') are written to the temp dir on every run."""
        return (e for e in self.entries if e.typecode in ("b", "e", "x"))


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binary() -> Path:
    override = os.environ.get("ECR_KUBELET_TEST_BINARY")
    path = Path(override) if override else ROOT / "dist" / "ecr-credential-provider"
    if not path.exists():
        pytest.skip(f"{path} is not built (run scripts/build-binary)")
    return path


@pytest.fixture(scope="module")
def bundle(binary: Path) -> Bundle:
    try:
        return Bundle(binary)
    except ValueError as exc:
        pytest.skip(f"not a PyInstaller one-file binary: {exc}")


def host_glibc() -> tuple[int, ...]:
    value = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
    m = re.search(r"(\d+)\.(\d+)", value)
    return (int(m.group(1)), int(m.group(2))) if m else (0,)


def libraries_floor() -> tuple[int, ...]:
    env = os.environ.get("ECR_KUBELET_GLIBC_FLOOR")
    if env:
        return tuple(int(p) for p in env.split("."))
    return host_glibc()


# ---- tests --------------------------------------------------------------------------------------


def test_elf_reader_matches_a_system_library() -> None:
    """The reader finds GLIBC versions in a library the test machine certainly has."""
    libz = next((p for p in (Path("/lib/x86_64-linux-gnu/libz.so.1"), Path("/usr/lib64/libz.so.1"),
                             Path("/lib/aarch64-linux-gnu/libz.so.1"), Path("/usr/lib/libz.so.1")) if p.exists()),
                None)
    if libz is None:
        pytest.skip("no libz.so.1 at a known path")
    versions = elf_required_versions(libz.resolve().read_bytes())
    assert any(v.startswith("GLIBC_2.") for v in versions)


def test_bootloader_needs_at_most_documented_glibc(binary: Path) -> None:
    needed = max_glibc(elf_required_versions(binary.read_bytes()))
    assert needed != (0,), "no GLIBC symbol versions found: not a dynamically linked glibc executable?"
    assert needed <= DOCUMENTED_FLOOR, (
        f"{binary.name} (the bootloader) needs GLIBC_{fmt(needed)}, above the documented {fmt(DOCUMENTED_FLOOR)}"
    )


def test_bundled_libraries_glibc_floor(bundle: Bundle) -> None:
    floor = libraries_floor()
    worst: dict[str, tuple[int, ...]] = {}
    checked = 0
    for entry in bundle.extracted():
        if entry.typecode not in ("b", "e"):
            continue
        data = bundle.read(entry)
        if data[:4] != b"\x7fELF":
            continue
        checked += 1
        needed = max_glibc(elf_required_versions(data))
        if needed > floor:
            worst[entry.name] = needed
    assert checked > 0, "no bundled shared libraries found"
    assert not worst, (
        f"bundled libraries need a newer glibc than {fmt(floor)} "
        f"({'ECR_KUBELET_GLIBC_FLOOR' if os.environ.get('ECR_KUBELET_GLIBC_FLOOR') else 'this machine'}): "
        + ", ".join(f"{name}: GLIBC_{fmt(v)}" for name, v in sorted(worst.items()))
    )


def test_binary_size_and_contents(binary: Path, bundle: Bundle) -> None:
    size = binary.stat().st_size
    assert size <= MAX_SIZE_BYTES, f"{binary.name} is {size / 1e6:.1f} MB (target <= 20 MB)"
    names = [e.name for e in bundle.extracted()]
    botocore_data = [n for n in names if n.startswith("botocore/data/")]
    services = {n.split("/")[2] for n in botocore_data if n.count("/") >= 4}
    assert services == BOTOCORE_SERVICES, f"unexpected botocore services bundled: {sorted(services)}"
    for service in services:
        versions = {n.split("/")[3] for n in botocore_data if n.split("/")[2] == service and n.count("/") >= 4}
        assert len(versions) == 1, f"{service}: more than one API version bundled: {sorted(versions)}"
    top = {n.rsplit("/", 1)[1] for n in botocore_data if n.count("/") == 2}
    assert {"endpoints.json", "partitions.json", "sdk-default-configuration.json", "_retry.json"} <= top
    unwanted = [n for n in names if n.startswith(("boto3/", "cryptography", "s3transfer/")) or "_tkinter" in n]
    assert not unwanted, f"unused packages bundled: {unwanted}"


def test_version_prints_version_and_commit(binary: Path) -> None:
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False)
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
