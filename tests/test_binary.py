"""Checks on the binary built by scripts/build-binary.

The binary is ``dist/ecr-credential-provider`` or ``$ECR_KUBELET_TEST_BINARY``; every test here is
skipped when it is not built. Two formats are understood: the default unpack-once launcher
(packaging/launcher.c with a zlib-compressed PyInstaller one-dir tree appended by
packaging/make-bundle.py) and the classic PyInstaller one-file build (``build-binary --onefile``).

glibc floor: the launcher and every ELF file bundled (the one-dir bootloader, libpython, extension
modules, libssl, ...) come from the build machine and need that machine's glibc (PyInstaller's
prebuilt one-file bootloader needs at most 2.17). Release builds come from the Dockerfile's
manylinux2014 stage and are checked with ``ECR_KUBELET_GLIBC_FLOOR=2.17``; without that variable
they are checked against the glibc of the machine running the tests (they must at least run here).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import threading
import time
import zlib
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


# ---- readers for the two formats ----------------------------------------------------------------


COOKIE_MAGIC = b"MEI\014\013\012\013\016"
COOKIE_FMT = "!8sIIII64s"
TOC_ENTRY_FMT = "!IIIIBc"

# packaging/launcher.c / make-bundle.py
LAUNCHER_MAGIC = b"ECRKUBELET-BNDL1"
LAUNCHER_TRAILER = struct.Struct("<QQ64s64s16s")
LAUNCHER_RECORD = struct.Struct("<cIIQ")
MARKER = ".ecr-bundle-complete"


@dataclass(frozen=True)
class Entry:
    name: str  # path as the program sees it: relative to sys._MEIPASS (one-dir: _internal/)
    kind: str  # "binary" (shared library / extension / executable), "data", "symlink"
    data: bytes
    path: str = ""  # path inside the unpacked tree (launcher format)
    mode: int = 0o644


class Bundle:
    """What the binary unpacks: the launcher's payload, or the one-file CArchive's entries."""

    def __init__(self, path: Path) -> None:
        self.raw = path.read_bytes()
        self.entries: list[Entry] = []
        self.launcher = self.raw.endswith(LAUNCHER_MAGIC)
        if self.launcher:
            offset, length, bundle_id, entry, _magic = LAUNCHER_TRAILER.unpack_from(
                self.raw, len(self.raw) - LAUNCHER_TRAILER.size)
            self.payload_offset, self.payload_length = offset, length
            self.id = bundle_id.decode("ascii")
            self.entry = entry.rstrip(b"\0").decode()
            payload = self.raw[offset : offset + length]
            assert hashlib.sha256(payload).hexdigest() == self.id, "bundle id is not the payload's sha256"
            self._read_payload(zlib.decompress(payload))
        else:
            self._read_carchive(path)

    def _read_payload(self, data: bytes) -> None:
        pos = 0
        while True:
            kind, mode, plen, size = LAUNCHER_RECORD.unpack_from(data, pos)
            pos += LAUNCHER_RECORD.size
            if kind == b"E":
                break
            rel = data[pos : pos + plen].decode()
            body = data[pos + plen : pos + plen + size]
            pos += plen + size
            if kind == b"D":
                continue
            name = rel.removeprefix("_internal/")
            if kind == b"L":
                self.entries.append(Entry(name, "symlink", body, rel, mode))
            else:
                self.entries.append(Entry(name, "binary" if body[:4] == b"\x7fELF" else "data", body, rel, mode))
        assert pos == len(data), "trailing bytes after the end record"

    def _read_carchive(self, path: Path) -> None:
        cookie_at = self.raw.rfind(COOKIE_MAGIC)
        if cookie_at < 0:
            raise ValueError(f"{path} holds neither a launcher bundle nor a PyInstaller archive")
        _magic, pkg_len, toc_off, toc_len, _pyver, _pylib = struct.unpack_from(COOKIE_FMT, self.raw, cookie_at)
        start = cookie_at + struct.calcsize(COOKIE_FMT) - pkg_len
        pos, end = start + toc_off, start + toc_off + toc_len
        head = struct.calcsize(TOC_ENTRY_FMT)
        while pos < end:
            entry_len, off, length, _ulen, flag, typecode = struct.unpack_from(TOC_ENTRY_FMT, self.raw, pos)
            name = self.raw[pos + head : pos + entry_len].rstrip(b"\0").decode()
            pos += entry_len
            code = typecode.decode()
            if code not in ("b", "e", "x"):  # only these are written to the temp dir
                continue
            raw = self.raw[start + off : start + off + length]
            self.entries.append(Entry(name, "binary" if code in ("b", "e") else "data",
                                      zlib.decompress(raw) if flag else raw))

    def outer(self) -> bytes:
        """The executable the kernel runs: the launcher (without its payload) or the bootloader."""
        return self.raw[: self.payload_offset] if self.launcher else self.raw


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
        pytest.skip(f"not a binary built by scripts/build-binary: {exc}")


@pytest.fixture(scope="module")
def launcher(bundle: Bundle) -> Bundle:
    if not bundle.launcher:
        pytest.skip("a PyInstaller one-file build (--onefile), not the unpack-once launcher")
    return bundle


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


def test_outer_executable_glibc_floor(bundle: Bundle) -> None:
    """The launcher is built on the build machine (floor as for the libraries); the one-file
    bootloader is PyInstaller's prebuilt one (2.17). zlib is linked into the launcher statically."""
    needed = max_glibc(elf_required_versions(bundle.outer()))
    assert needed != (0,), "no GLIBC symbol versions found: not a dynamically linked glibc executable?"
    floor = libraries_floor() if bundle.launcher else DOCUMENTED_FLOOR
    assert needed <= floor, f"the outer executable needs GLIBC_{fmt(needed)}, above {fmt(floor)}"
    if bundle.launcher:
        assert b"libz.so" not in bundle.outer(), "the launcher must link zlib statically"


def test_bundled_libraries_glibc_floor(bundle: Bundle) -> None:
    floor = libraries_floor()
    worst: dict[str, tuple[int, ...]] = {}
    checked = 0
    for entry in bundle.entries:
        if entry.kind != "binary":
            continue
        checked += 1
        needed = max_glibc(elf_required_versions(entry.data))
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


# ---- the unpack-once launcher --------------------------------------------------------------------


def launcher_env(base: Path, tmpdir: Path | None = None) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(base.parent),
           "ECR_KUBELET_RUNTIME_DIR": str(base)}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env


def run_version(binary: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ecr-credential-provider "), proc.stdout
    assert proc.stderr == "", proc.stderr
    return proc


def snapshot(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """(inode, mode, mtime, ctime) of root and everything under it."""
    out = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_ino, st.st_mode, st.st_mtime_ns, st.st_ctime_ns)
    return out


def test_first_run_unpacks_into_the_runtime_dir(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    base = tmp_path / "cache" / "runtime"  # neither exists yet: created 0700
    run_version(binary, launcher_env(base))
    for d in (base.parent, base, base / launcher.id):
        st = d.lstat()
        assert (st.st_mode & 0o777) == 0o700, f"{d}: mode {st.st_mode & 0o777:o}"
        assert st.st_uid == os.geteuid()
    bundle_dir = base / launcher.id
    assert (bundle_dir / MARKER).read_text() == launcher.id + "\n"
    assert sorted(p.name for p in base.iterdir()) == sorted([launcher.id, launcher.id + ".lock"])
    for entry in launcher.entries:
        target = bundle_dir / entry.path
        if entry.kind == "symlink":
            assert os.readlink(target) == entry.data.decode()
        else:
            assert target.read_bytes() == entry.data, entry.path
            assert target.stat().st_mode & 0o777 == entry.mode & 0o755, entry.path
    assert os.access(bundle_dir / launcher.entry, os.X_OK)


def test_second_run_execs_without_writing(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    base = tmp_path / "runtime"
    env = launcher_env(base)
    run_version(binary, env)
    before = snapshot(base)
    time.sleep(0.05)  # so a rewrite would show in the nanosecond timestamps
    run_version(binary, env)
    assert snapshot(base) == before


def test_the_answering_process_is_the_launcher_itself(
    binary: Path, launcher: Bundle, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    """On the persistent path the launcher execs: same pid, no child (the kubelet's kill reaches it)."""
    env = dict(provider_env, ECR_KUBELET_RUNTIME_DIR=str(tmp_path / "runtime"))
    run_version(binary, env)
    proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    try:
        expected = tmp_path / "runtime" / launcher.id / launcher.entry
        deadline = time.monotonic() + 30
        exe = ""
        while time.monotonic() < deadline:
            exe = os.readlink(f"/proc/{proc.pid}/exe")
            if exe == str(expected):
                break
            time.sleep(0.005)
        assert exe == str(expected), f"pid {proc.pid} runs {exe}, not the unpacked bundle"
        time.sleep(0.2)  # let the bootloader settle into Python (it may re-exec itself, same pid)
        children = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == proc.pid]
        assert not children, f"the launcher has child processes: {children}"
        request = json.dumps(make_request("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app")) + "\n"
        out, err = proc.communicate(request.encode(), timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["auth"]


def _ppid(proc_dir: Path) -> int:
    try:
        stat_line = (proc_dir / "stat").read_text()
    except OSError:
        return -1
    return int(stat_line.rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("refusal", ["symlink", "world-writable", "group-writable", "not-a-directory"])
def test_refused_runtime_dir_falls_back_to_a_temp_dir(
    binary: Path, launcher: Bundle, tmp_path: Path, refusal: str
) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    base = tmp_path / "runtime"
    if refusal == "symlink":
        base.symlink_to(real)
    elif refusal == "not-a-directory":
        base.write_text("")
    else:
        base.mkdir()
        base.chmod(0o777 if refusal == "world-writable" else 0o770)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    run_version(binary, launcher_env(base, tmpdir))
    assert list(tmpdir.iterdir()) == [], "the temporary bundle was not removed"
    assert list(real.iterdir()) == [], "unpacked through a symlink"
    if base.is_dir() and not base.is_symlink():
        assert list(base.iterdir()) == [], "unpacked into a refused directory"


def test_refused_bundle_dir_falls_back(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    """<base>/<id> itself is checked too: a symlink planted there is not followed."""
    base = tmp_path / "runtime"
    base.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / MARKER).write_text(launcher.id + "\n")
    (base / launcher.id).symlink_to(elsewhere)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    run_version(binary, launcher_env(base, tmpdir))
    assert list(tmpdir.iterdir()) == []
    assert sorted(p.name for p in elsewhere.iterdir()) == [MARKER]


def test_fallback_passes_the_exit_status_through(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    results = []
    for base in (tmp_path / "ok", tmp_path / "refused"):
        if base.name == "refused":
            base.mkdir(mode=0o777)
            base.chmod(0o777)
        proc = subprocess.run([str(binary)], input=b"not json\n", capture_output=True,
                              env=launcher_env(base, tmp_path), timeout=120, check=False)
        results.append((proc.returncode, proc.stdout))
    assert results[0][0] != 0
    assert results[0] == results[1]


def test_corrupt_binary_fails_with_one_error_line(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    data = bytearray(launcher.raw)
    mid = launcher.payload_offset + launcher.payload_length // 2
    data[mid : mid + 64] = bytes(64)  # corrupt the deflate stream, keep the trailer
    broken.write_bytes(bytes(data))
    broken.chmod(0o755)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(launcher.raw[:-1])
    truncated.chmod(0o755)
    for exe in (broken, truncated):
        base = tmp_path / f"rt-{exe.name}"
        proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                              env=launcher_env(base, tmp_path), timeout=60, check=False)
        assert proc.returncode == 1
        assert proc.stdout == ""
        assert re.fullmatch(r"ecr-credential-provider: error: [^\n]+\n", proc.stderr), proc.stderr
        if base.exists():
            assert [p.name for p in base.iterdir() if p.name != launcher.id + ".lock"] == [], "left a partial bundle"


def test_concurrent_first_runs_unpack_once(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    base = tmp_path / "runtime"
    marker = base / launcher.id / MARKER
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                st = marker.stat()
                seen.append((st.st_ino, st.st_ctime_ns))
            except OSError:
                pass
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    env = launcher_env(base)
    try:
        procs = [subprocess.Popen([str(binary), "--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env) for _ in range(20)]
        results = [(p.wait(timeout=300), p.stdout.read() if p.stdout else b"", p.stderr.read() if p.stderr else b"")
                   for p in procs]
    finally:
        stop.set()
        watcher.join()
        for p in procs:
            for stream in (p.stdout, p.stderr):
                if stream:
                    stream.close()
    failed = [r for r in results if r[0] != 0 or not r[1].startswith(b"ecr-credential-provider ")]
    assert not failed, failed[:3]
    assert sorted(p.name for p in base.iterdir()) == sorted([launcher.id, launcher.id + ".lock"])
    assert len(set(seen)) == 1, f"the bundle was unpacked more than once: {sorted(set(seen))}"


def test_default_runtime_dir_for_non_root_is_under_home(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root unpacks into /var/cache/ecr-credential-provider/runtime (not touched by tests)")
    env = launcher_env(tmp_path / "unused")
    del env["ECR_KUBELET_RUNTIME_DIR"]
    env["HOME"] = str(tmp_path / "home")
    run_version(binary, env)
    assert (tmp_path / "home" / ".cache" / "ecr-credential-provider" / "runtime" / launcher.id / MARKER).exists()
    shutil.rmtree(tmp_path / "home")


def test_fallback_forwards_sigterm_and_reraises_it(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    """Fallback runs a child: SIGTERM to the launcher reaches it, the launcher dies of the same
    signal and the temporary bundle is removed."""
    base = tmp_path / "refused"
    base.mkdir()
    base.chmod(0o777)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=launcher_env(base, tmpdir))
    try:
        deadline = time.monotonic() + 30
        children: list[Path] = []
        while time.monotonic() < deadline and not children:
            children = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == proc.pid]
            time.sleep(0.01)
        assert children, "the fallback runs no child"
        time.sleep(0.5)  # let Python start and block on stdin
        proc.terminate()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -15
    assert list(tmpdir.iterdir()) == []


def test_read_only_runtime_dir_falls_back(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1) for a read-only bind mount")
    if subprocess.run([unshare, "-m", "true"], capture_output=True, timeout=30, check=False).returncode != 0:
        pytest.skip("cannot create a mount namespace here")
    ro = tmp_path / "ro"
    (ro / "base").mkdir(parents=True, mode=0o700)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    script = ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 77; '
              'ECR_KUBELET_RUNTIME_DIR="$1/base" TMPDIR="$2" "$3" --version')
    proc = subprocess.run([unshare, "-m", "sh", "-c", script, "sh", str(ro), str(tmpdir), str(binary)],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode == 77:
        pytest.skip(f"cannot bind-mount read-only here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ecr-credential-provider ")
    assert list((ro / "base").iterdir()) == []
    assert list(tmpdir.iterdir()) == []
