"""The launcher (packaging/launcher.c) of the built binary: unpack once, verify, repair, prune, and
every attack on its runtime directory that we could think of, run as root.

Synchronisation is by conditions (a process blocked reading stdin, a directory gone), never by
sleeping for a while; polls are bounded by a deadline.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import termios
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bundle import LAUNCHER_MAGIC, LAUNCHER_RECORD, LAUNCHER_TRAILER, RECORD, Bundle
from helpers import StubClient, make_request

NOBODY = 65534
OTHER_ID = "0123456789abcdef" * 4
SHARED = f"ecr-credential-provider-{os.geteuid()}"  # the shared fallback tree in the temporary directory
PRUNE_MARK = ".ecr-prune-pending"


def launcher_env(base: Path | None, tmpdir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}
    if base is not None:
        env["ECR_KUBELET_RUNTIME_DIR"] = str(base)
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    env.update(extra)
    return env


def run(binary: Path, env: dict[str, str], *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(binary), *args], input=stdin, capture_output=True, env=env, timeout=120, check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def run_version(binary: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = run(binary, env, "--version", *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ecr-credential-provider "), proc.stdout
    return proc


def wait_until(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


# Syscalls a Python program blocks in while it waits for its request on stdin (read, or the
# select/poll that bounds the wait by the deadline), by the machine the kernel sees (qemu-user runs
# an emulated arm64 program with the host's syscalls).
WAITING_SYSCALLS = {"x86_64": {"0", "7", "23", "270", "271"}, "aarch64": {"63", "72", "73"}}


def reading_stdin(pid: int) -> bool:
    """The process waits for its request: Python has started and blocks on stdin (fd 0)."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    waiting = WAITING_SYSCALLS.get(os.uname().machine, set())
    if len(fields) < 2 or fields[0] not in waiting:
        return False
    if fields[0] in ("0", "63"):  # read(2): on fd 0
        return fields[1] == "0x0"
    return any("libpython" in f for f in mapped_files(pid))  # select/poll: once Python runs


def mapped_files(pid: int) -> set[str]:
    """Files mapped into the process: the program it runs, natively or under qemu-user emulation
    (where /proc/PID/exe is the emulator but the guest's files are mapped all the same)."""
    return {line.split(None, 5)[5] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if len(line.split(None, 5)) == 6}


def children_of(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(p.name))
    return out


@contextmanager
def waiting_program(binary: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """The binary started with pipes, once it waits for its request on stdin; reaped afterwards."""
    proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    try:
        wait_until(lambda: reading_stdin(proc.pid), "the program to read its request")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def ask(proc: subprocess.Popen[bytes]) -> dict[str, object]:
    """Send one request to a waiting program; its answer, which must be a success."""
    request = json.dumps(make_request("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app")) + "\n"
    out, err = proc.communicate(request.encode(), timeout=60)
    assert proc.returncode == 0, err.decode()
    answer: dict[str, object] = json.loads(out)
    return answer


def entries(base: Path) -> set[str]:
    return {p.name for p in base.iterdir()} if base.exists() else set()


def tree_matches_payload(bundle_dir: Path, launcher: Bundle) -> None:
    for entry in launcher.entries:
        target = bundle_dir / entry.path
        assert target.read_bytes() == entry.data, entry.path
        assert stat.S_IMODE(target.lstat().st_mode) == entry.mode & 0o755, entry.path


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    return tmp_path / "runtime"


@pytest.fixture
def scratch_tmp(tmp_path: Path) -> Path:
    d = tmp_path / "tmp"
    d.mkdir()
    return d


# ---- the normal path ---------------------------------------------------------------------------


def test_first_run_unpacks_and_records_the_tree(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    base = tmp_path / "cache" / "runtime"  # neither exists yet: created 0700
    proc = run_version(binary, launcher_env(base), "-v")
    assert f"unpacked the bundle into {base}/{launcher.id}" in proc.stderr
    for d in (base.parent, base, base / launcher.id):
        st = d.lstat()
        assert stat.S_IMODE(st.st_mode) == 0o700, f"{d}: mode {st.st_mode:o}"
        assert st.st_uid == os.geteuid()
    assert entries(base) == {launcher.id, launcher.id + ".lock", launcher.id + ".use"}
    bundle_dir = base / launcher.id
    tree_matches_payload(bundle_dir, launcher)
    record = (bundle_dir / RECORD).read_text().splitlines()
    assert record[0] == f"ECRKUBELET-RT2 {launcher.id}"
    assert re.fullmatch(r"end [0-9a-f]{8}", record[-1])
    recorded = {line.split(" ", 5)[5] for line in record[1:-1]}
    assert {e.path for e in launcher.entries} <= recorded


def test_a_hit_writes_nothing(binary: Path, launcher: Bundle, runtime: Path, scratch_tmp: Path) -> None:
    """The second run works from a read-only runtime directory, without falling back."""
    run_version(binary, launcher_env(runtime))
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 77; shift; exec "$@"'
    env = launcher_env(runtime, scratch_tmp)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(runtime), str(binary), "--version", "-v"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    if proc.returncode == 77:
        pytest.fail(f"cannot bind-mount read-only here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", "a hit must not unpack, warn or fall back"
    assert entries(scratch_tmp) == set()


def test_the_answering_process_is_the_one_the_kubelet_started(
    binary: Path, launcher: Bundle, stub: StubClient, provider_env: dict[str, str], runtime: Path
) -> None:
    """The launcher execs the bundled loader: same pid, no child, so the kubelet's kill reaches it."""
    env = dict(provider_env, ECR_KUBELET_RUNTIME_DIR=str(runtime))
    run_version(binary, env)
    with waiting_program(binary, env) as proc:
        assert str(runtime / launcher.id / launcher.loader) in mapped_files(proc.pid)
        assert children_of(proc.pid) == []
        assert ask(proc)["auth"]


def test_a_run_execs_the_bundled_loader_once(binary: Path, launcher: Bundle, runtime: Path, tmp_path: Path) -> None:
    """The launcher sets up what PyInstaller's bootloader would restart itself for: no second exec."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    env = launcher_env(runtime, LD_LIBRARY_PATH="/opt/node-libs")
    run_version(binary, env)  # unpacked
    trace = tmp_path / "trace"
    proc = subprocess.run([strace, "-f", "-qq", "-e", "trace=execve", "-o", str(trace), str(binary), "--version"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"cannot trace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    execs = [line for line in trace.read_text().splitlines() if "execve(" in line and "= 0" in line]
    assert len(execs) == 2, execs  # the launcher, then the loader on the bundled program
    assert str(runtime / launcher.id / launcher.loader) in execs[1]


def test_concurrent_first_runs_unpack_once(binary: Path, launcher: Bundle, runtime: Path) -> None:
    env = launcher_env(runtime)
    procs = [subprocess.Popen([str(binary), "--version", "-v"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env) for _ in range(20)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert all(code == 0 and out.startswith(b"ecr-credential-provider ") for code, out, _err in results), results[:3]
    unpacks = sum(err.count(b"unpacked the bundle") for _code, _out, err in results)
    assert unpacks == 1
    assert entries(runtime) == {launcher.id, launcher.id + ".lock", launcher.id + ".use"}


def test_runtime_dir_must_be_an_absolute_path(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    for value in ("", "relative/runtime", "."):
        proc = run(binary, {"PATH": "/usr/bin:/bin", "ECR_KUBELET_RUNTIME_DIR": value}, "--version")
        assert proc.returncode == 2, (value, proc.stderr)
        assert proc.stdout == ""
        assert re.fullmatch(r"ecr-credential-provider: error: ECR_KUBELET_RUNTIME_DIR must be an absolute path[^\n]*\n",
                            proc.stderr), proc.stderr


def test_stdin_that_is_a_directory_is_one_line_exit_2(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    # CPython itself cannot start with it (a multi-line fatal error): the launcher says so first.
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        proc = subprocess.run([str(binary)], stdin=directory, capture_output=True, env=launcher_env(tmp_path),
                              timeout=120, check=False)
    finally:
        os.close(directory)
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr == b"ecr-credential-provider: error: stdin is a directory, not a request\n"


def test_default_runtime_dir_for_a_user_is_under_home(binary: Path, launcher: Bundle) -> None:
    """As a non-root user (setpriv to nobody), the bundle goes to $HOME/.cache, checked the same way."""
    top = Path(tempfile.mkdtemp(prefix="ecr-launcher-user-"))
    try:
        top.chmod(0o755)
        exe = top / "ecr-credential-provider"
        shutil.copyfile(binary, exe)
        exe.chmod(0o755)
        home = top / "home"
        home.mkdir(mode=0o700)
        os.chown(home, NOBODY, NOBODY)
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", str(exe), "--version"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(home)})
        assert proc.returncode == 0, proc.stderr
        assert (home / ".cache" / "ecr-credential-provider" / "runtime" / launcher.id / RECORD).is_file()
    finally:
        shutil.rmtree(top)


# ---- who may change the runtime directory ------------------------------------------------------


def _mkdir(path: Path, mode: int, uid: int | None = None) -> Path:
    path.mkdir()
    path.chmod(mode)
    if uid is not None:
        os.chown(path, uid, uid)
    return path


def refused_layouts(tmp: Path) -> Iterator[tuple[str, Path, Path]]:
    """(name, configured base, directory that must stay empty)."""
    p = _mkdir(tmp / "ww", 0o777)
    yield "world-writable parent", p / "runtime", p
    p = _mkdir(tmp / "gw", 0o770)
    yield "group-writable parent", p / "runtime", p
    p = _mkdir(tmp / "other-owner", 0o755, NOBODY)
    yield "parent owned by another user", p / "runtime", p
    s = _mkdir(tmp / "sticky", 0o1777)
    other = _mkdir(s / "runtime", 0o700, NOBODY)
    yield "sticky parent, entry of another user", other, other
    p = _mkdir(tmp / "ww-link", 0o777)
    real = _mkdir(tmp / "real", 0o700)
    (p / "runtime").symlink_to(real)
    yield "symlink in a world-writable directory", p / "runtime", real
    s2 = _mkdir(tmp / "sticky-link", 0o1777)
    real2 = _mkdir(tmp / "real2", 0o700)
    (s2 / "runtime").symlink_to(real2)
    os.lchown(s2 / "runtime", NOBODY, NOBODY)  # another user's symlink in a sticky directory
    yield "another user's symlink in a sticky directory", s2 / "runtime", real2
    b = _mkdir(tmp / "gw-base", 0o770)
    yield "group-writable base", b, b
    f = tmp / "file"
    f.write_text("")
    yield "base is a file", f, tmp / "ww"


def test_refused_runtime_dirs_fall_back_with_a_warning_at_v(
    binary: Path, launcher: Bundle, tmp_path: Path, scratch_tmp: Path
) -> None:
    layouts = tmp_path / "layouts"
    layouts.mkdir()
    for name, base, must_stay_empty in refused_layouts(layouts):
        before = entries(must_stay_empty)
        quiet = run_version(binary, launcher_env(base, scratch_tmp))
        assert quiet.stderr == "", (name, quiet.stderr)
        loud = run_version(binary, launcher_env(base, scratch_tmp), "-v")
        assert re.fullmatch(r"ecr-credential-provider: warning: not using the persistent runtime directory "
                            r"\([^\n]+\); unpacking into a temporary directory\n", loud.stderr), (name, loud.stderr)
        assert entries(must_stay_empty) == before, f"{name}: wrote into a refused directory"
        assert entries(scratch_tmp) == {SHARED}, "the fallback runs from one shared tree"


def test_sticky_parent_with_our_entry_is_trusted(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    sticky = _mkdir(tmp_path / "sticky", 0o1777)
    run_version(binary, launcher_env(sticky / "runtime"))
    assert (sticky / "runtime" / launcher.id / RECORD).is_file()


def test_symlink_in_a_trusted_directory_is_followed_once(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    real = _mkdir(tmp_path / "real", 0o700)
    (tmp_path / "link").symlink_to(real)
    run_version(binary, launcher_env(tmp_path / "link"))
    assert (real / launcher.id / RECORD).is_file()


def test_planted_bundle_symlink_is_replaced_not_followed(binary: Path, launcher: Bundle, runtime: Path,
                                                         tmp_path: Path) -> None:
    runtime.mkdir(mode=0o700)
    elsewhere = _mkdir(tmp_path / "elsewhere", 0o700)
    (elsewhere / RECORD).write_text(f"ECRKUBELET-RT2 {launcher.id}\n")
    (runtime / launcher.id).symlink_to(elsewhere)
    run_version(binary, launcher_env(runtime))
    assert entries(elsewhere) == {RECORD}
    assert (runtime / launcher.id).is_dir() and not (runtime / launcher.id).is_symlink()
    tree_matches_payload(runtime / launcher.id, launcher)


@pytest.mark.parametrize("which", ["use", "lock"])
@pytest.mark.parametrize("plant", ["fifo", "symlink", "other-owner"])
def test_planted_lock_files_are_not_followed_or_waited_on(
    binary: Path, launcher: Bundle, runtime: Path, tmp_path: Path, scratch_tmp: Path, which: str, plant: str
) -> None:
    runtime.mkdir(mode=0o700)
    path = runtime / f"{launcher.id}.{which}"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    if plant == "fifo":
        os.mkfifo(path, 0o600)
    elif plant == "symlink":
        path.symlink_to(victim)
    else:
        path.write_text("")
        os.chown(path, NOBODY, NOBODY)
    proc = run_version(binary, launcher_env(runtime, scratch_tmp), "-v")
    assert "unpacking into a temporary directory" in proc.stderr
    assert victim.read_text() == "keep"
    assert not (runtime / launcher.id).exists()


# ---- damage and repair -------------------------------------------------------------------------


def _truncate(tree: Path, launcher: Bundle) -> None:
    lib = next(tree / e.path for e in launcher.entries if e.name.startswith("libpython"))
    with lib.open("r+b") as fh:
        fh.truncate(1000)


def _delete(tree: Path, launcher: Bundle) -> None:
    (tree / next(e.path for e in launcher.entries if e.name.endswith("endpoints.json"))).unlink()


def _rewrite_same_size(tree: Path, launcher: Bundle) -> None:
    lib = next(tree / e.path for e in launcher.entries if e.name.startswith("libssl"))
    data = bytearray(lib.read_bytes())
    data[5000] ^= 0xFF
    lib.write_bytes(bytes(data))


def _damage_record(tree: Path, launcher: Bundle) -> None:
    record = tree / RECORD
    record.write_text(record.read_text().replace(" 755 ", " 777 ", 1))


def _delete_record(tree: Path, launcher: Bundle) -> None:
    (tree / RECORD).unlink()


def _delete_everything(tree: Path, launcher: Bundle) -> None:
    shutil.rmtree(tree / launcher.libdir)


@pytest.mark.parametrize("damage", [_truncate, _delete, _rewrite_same_size, _damage_record, _delete_record,
                                    _delete_everything])
def test_damaged_tree_is_repaired(binary: Path, launcher: Bundle, runtime: Path, damage: object) -> None:
    env = launcher_env(runtime)
    run_version(binary, env)
    tree = runtime / launcher.id
    damage(tree, launcher)  # type: ignore[operator]
    proc = run_version(binary, env, "-v")
    assert "unpacked the bundle" in proc.stderr, "the damage was not noticed"
    tree_matches_payload(tree, launcher)
    assert run_version(binary, env, "-v").stderr == "", "the repaired tree is not a hit"
    assert entries(runtime) == {launcher.id, launcher.id + ".lock", launcher.id + ".use"}


def test_leftovers_of_a_killed_unpack_are_removed(binary: Path, launcher: Bundle, runtime: Path) -> None:
    runtime.mkdir(mode=0o700)
    left = runtime / f"{launcher.id}.tmp.999999"
    (left / "_internal").mkdir(parents=True)
    (left / "_internal" / "half-written.so").write_bytes(b"\x7fELF")
    run_version(binary, launcher_env(runtime))
    assert entries(runtime) == {launcher.id, launcher.id + ".lock", launcher.id + ".use"}


def test_corrupt_payloads_are_never_executed(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    data = bytearray(launcher.raw)
    variants = {}
    mid = launcher.payload_offset + launcher.payload_length // 2
    broken = bytearray(data)
    broken[mid : mid + 64] = bytes(64)
    variants["deflate"] = bytes(broken)
    variants["truncated"] = bytes(data[:-1])
    # Same payload, another id in the trailer: inflates cleanly, but its sha256 is not the id.
    trailer_id = len(data) - 16 - 3 * 64 - 64
    wrong = bytearray(data)
    wrong[trailer_id : trailer_id + 64] = OTHER_ID.encode()
    variants["digest"] = bytes(wrong)
    for name, content in variants.items():
        exe = tmp_path / f"broken-{name}"
        exe.write_bytes(content)
        exe.chmod(0o755)
        base = tmp_path / f"rt-{name}"
        for tmpdir in (None, base):  # persistent and (refused base: a file) temporary paths
            env = launcher_env(base if tmpdir is None else tmp_path / "no-such" / "x", tmp_path)
            proc = run(exe, env, "--version")
            assert proc.returncode == 1, (name, proc.stderr)
            assert proc.stdout == ""
            assert re.fullmatch(r"ecr-credential-provider: error: [^\n]+\n", proc.stderr), proc.stderr
        if name == "digest":
            assert "does not match its digest" in proc.stderr
        leftovers = {n for n in entries(base) if not n.endswith((".lock", ".use"))}
        assert leftovers == set(), f"{name}: left {leftovers}"


# ---- pruning old versions ----------------------------------------------------------------------


def _old_bundle(runtime: Path, bundle_id: str) -> None:
    (runtime / bundle_id / "_internal").mkdir(parents=True, mode=0o700)
    (runtime / bundle_id / "_internal" / "libpython3.so").write_bytes(b"old")
    (runtime / f"{bundle_id}.lock").write_text("")
    (runtime / f"{bundle_id}.use").write_text("")
    (runtime / f"{bundle_id}.tmp.4242").mkdir()


def test_a_new_version_prunes_unused_old_bundles(binary: Path, launcher: Bundle, runtime: Path) -> None:
    runtime.mkdir(mode=0o700)
    _old_bundle(runtime, OTHER_ID)
    (runtime / "not-a-bundle").write_text("left alone")
    run_version(binary, launcher_env(runtime))
    assert entries(runtime) == {launcher.id, launcher.id + ".lock", launcher.id + ".use", "not-a-bundle"}


def test_a_bundle_in_use_is_not_pruned(binary: Path, launcher: Bundle, runtime: Path) -> None:
    runtime.mkdir(mode=0o700)
    _old_bundle(runtime, OTHER_ID)
    with (runtime / f"{OTHER_ID}.use").open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_SH)  # what a running program of that version holds
        run_version(binary, launcher_env(runtime))
        assert (runtime / OTHER_ID / "_internal" / "libpython3.so").read_bytes() == b"old"
    assert PRUNE_MARK in entries(runtime), "the skipped tree is left for a later run"
    assert run_version(binary, launcher_env(runtime), "-v").stderr == "", "a hit, not an unpack"
    assert entries(runtime) == {launcher.id, launcher.id + ".lock", launcher.id + ".use"}, \
        "a tree in use during the prune is pruned by a later run"


def test_a_running_program_holds_its_bundle(binary: Path, launcher: Bundle, provider_env: dict[str, str],
                                            runtime: Path) -> None:
    """While a run is in progress, the shared lock is held: a pruner's exclusive try fails."""
    env = dict(provider_env, ECR_KUBELET_RUNTIME_DIR=str(runtime))
    run_version(binary, env)
    with waiting_program(binary, env), (runtime / f"{launcher.id}.use").open("rb") as fh, \
            pytest.raises(BlockingIOError):
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


# ---- the temporary fallback --------------------------------------------------------------------


def _refused(tmp_path: Path) -> Path:
    base = _mkdir(tmp_path / "refused", 0o777)
    return base / "runtime"


def _no_shared_tree(tmpdir: Path) -> set[str]:
    """A file where the shared fallback tree would go: the launcher takes a private, watched
    directory instead (its last resort). What the temporary directory holds at rest."""
    (tmpdir / SHARED).write_text("")
    return {SHARED}


def test_fallback_runs_share_one_tree_per_version(binary: Path, launcher: Bundle, tmp_path: Path,
                                                  scratch_tmp: Path) -> None:
    """A storm of fallback runs unpacks once into <tmp>/ecr-credential-provider-<uid>, not once each."""
    env = launcher_env(_refused(tmp_path), scratch_tmp)
    procs = [subprocess.Popen([str(binary), "--version", "-v"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env) for _ in range(10)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert all(code == 0 for code, _out, _err in results), results[:3]
    assert sum(err.count(b"unpacked the bundle") for _code, _out, err in results) == 1
    assert entries(scratch_tmp) == {SHARED}
    assert (scratch_tmp / SHARED / launcher.id / RECORD).is_file()
    assert stat.S_IMODE((scratch_tmp / SHARED).lstat().st_mode) == 0o700
    again = run_version(binary, env, "-v")
    assert "unpacked" not in again.stderr, "a later fallback run is a hit in the shared tree"


def test_fallback_execs_too_and_removes_its_directory(
    binary: Path, launcher: Bundle, stub: StubClient, provider_env: dict[str, str], tmp_path: Path, scratch_tmp: Path
) -> None:
    env = dict(provider_env, ECR_KUBELET_RUNTIME_DIR=str(_refused(tmp_path)), TMPDIR=str(scratch_tmp))
    rest = _no_shared_tree(scratch_tmp)
    with waiting_program(binary, env) as proc:
        loaders = [f for f in mapped_files(proc.pid) if f.endswith(launcher.loader)]
        assert len(loaders) == 1 and loaders[0].startswith(f"{scratch_tmp}/ecr-credential-provider-"), loaders
        assert children_of(proc.pid) == []
        assert ask(proc)["auth"]
    wait_until(lambda: entries(scratch_tmp) == rest, "the watchdog to remove the temporary bundle")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_fallback_leaves_nothing_behind(binary: Path, launcher: Bundle, tmp_path: Path, scratch_tmp: Path,
                                               sig: int) -> None:
    env = launcher_env(_refused(tmp_path), scratch_tmp)
    rest = _no_shared_tree(scratch_tmp)
    with waiting_program(binary, env) as proc:
        assert len(entries(scratch_tmp) - rest) == 1
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    assert proc.returncode == -sig
    wait_until(lambda: entries(scratch_tmp) == rest, "the watchdog to remove the temporary bundle")


def test_fallback_passes_the_exit_status_through(binary: Path, launcher: Bundle, tmp_path: Path,
                                                 scratch_tmp: Path) -> None:
    ok = run(binary, launcher_env(tmp_path / "ok"), stdin=b"not json\n")
    refused = run(binary, launcher_env(_refused(tmp_path), scratch_tmp), stdin=b"not json\n")
    assert ok.returncode not in (0, 1)  # a bad request, not a launcher failure
    assert (ok.returncode, ok.stdout, ok.stderr) == (refused.returncode, refused.stdout, refused.stderr)


def in_namespace(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`sh -c script sh args...` in a private mount namespace: the mounts it makes (tmpfs, bind,
    remount) are seen by it and its children only, never by the machine. Exit 77: cannot mount."""
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    if proc.returncode == 77:
        pytest.fail(f"cannot mount in a private mount namespace here: {proc.stderr.strip()}")
    return proc


# In a private namespace: a fresh tmpfs on /tmp (the machine's /tmp is never written), with the
# directories named in $2.. made again at their paths (mode: the second word of each). The binary
# ($1, which may be under /tmp) is opened first and run as $BIN (/proc/self/fd/9).
FRESH_TMP = ('exec 9<"$1" || exit 1; shift; BIN=/proc/self/fd/9; mount -t tmpfs -o mode=1777 tmpfs /tmp || exit 77; '
             'while [ "$1" != -- ]; do mkdir -p "$1" && chmod "$2" "$1"; shift 2; done; shift; ')


def test_untrusted_tmpdir_is_not_used(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    """TMPDIR in a world-writable, non-sticky directory: the fallback uses /tmp instead."""
    evil, refused = tmp_path / "evil", tmp_path / "refused"
    script = FRESH_TMP + 'ECR_KUBELET_RUNTIME_DIR="$2/runtime" TMPDIR="$1" "$BIN" --version || exit 1; ' \
        'echo "evil: $(ls -A "$1" | tr "\\n" " ")"; echo "tmp: $(ls -A /tmp | tr "\\n" " ")"'
    proc = in_namespace(script, str(binary), str(evil), "0777", str(refused), "0777", "--", str(evil), str(refused))
    assert proc.returncode == 0, proc.stderr
    listed = dict(line.split(":", 1) for line in proc.stdout.splitlines() if ":" in line)
    assert listed["evil"].split() == []
    assert SHARED in listed["tmp"].split()


def test_read_only_runtime_dir_falls_back(binary: Path, launcher: Bundle, tmp_path: Path, scratch_tmp: Path) -> None:
    ro = tmp_path / "ro"
    (ro / "base").mkdir(parents=True, mode=0o700)
    script = ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 77; '
              'ECR_KUBELET_RUNTIME_DIR="$1/base" TMPDIR="$2" exec "$3" --version')
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(ro), str(scratch_tmp), str(binary)],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode == 77:
        pytest.fail(f"cannot bind-mount read-only here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ecr-credential-provider ")
    assert entries(ro / "base") == set()
    assert (scratch_tmp / SHARED / launcher.id / RECORD).is_file()


# ---- what the program's own children see -------------------------------------------------------


def test_children_get_the_environment_without_the_bundle(
    binary: Path, launcher: Bundle, stub: StubClient, provider_env: dict[str, str], runtime: Path, tmp_path: Path
) -> None:
    """A credential_process runs with the node's library path, not the bundle's glibc."""
    dump = tmp_path / "env.txt"
    helper = tmp_path / "creds.sh"
    helper.write_text(f'#!/bin/sh\nenv > {dump}\n'
                      'echo \'{"Version": 1, "AccessKeyId": "AKIAPROCESS", "SecretAccessKey": "s"}\'\n')
    helper.chmod(0o755)
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\ncredential_process = {helper}\n")
    env = {k: v for k, v in provider_env.items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")}
    env.update(ECR_KUBELET_RUNTIME_DIR=str(runtime), AWS_CONFIG_FILE=str(config), LD_LIBRARY_PATH="/opt/node-libs",
               LD_PRELOAD="libm.so.6")  # kept from the carried loader by the launcher, restored for children
    request = json.dumps(make_request("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app")) + "\n"
    proc = run(binary, env, stdin=request.encode())
    assert proc.returncode == 0, proc.stderr
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert seen.get("LD_LIBRARY_PATH") == "/opt/node-libs"
    assert "LD_LIBRARY_PATH_ORIG" not in seen
    assert "ECR_KUBELET_ARGV0" not in seen
    assert seen.get("LD_PRELOAD") == "libm.so.6"
    assert "ECR_KUBELET_LD_PRELOAD" not in seen


# ---- a payload that tries to write outside its tree ----------------------------------------------


def crafted(launcher: Bundle, records: list[tuple[bytes, str, int, bytes]], dest: Path,
            names: tuple[str, str, str] | None = None) -> Path:
    """The real launcher with a hand-made payload (valid digest), as an attacker could append it;
    `names`: (executable, loader, library directory) in it, else the real bundle's."""
    comp = zlib.compressobj(9)
    data = b""
    for kind, rel, mode, body in records:
        data += comp.compress(LAUNCHER_RECORD.pack(kind, mode, len(rel.encode()), len(body)) + rel.encode() + body)
    data += comp.compress(LAUNCHER_RECORD.pack(b"E", 0, 0, 0)) + comp.flush()
    outer = launcher.outer()
    entry, loader, libdir = names or (launcher.entry, launcher.loader, launcher.libdir)
    trailer = LAUNCHER_TRAILER.pack(len(outer), len(data), hashlib.sha256(data).hexdigest().encode(), entry.encode(),
                                    loader.encode(), libdir.encode(), LAUNCHER_MAGIC)
    dest.write_bytes(outer + data + trailer)
    dest.chmod(0o755)
    return dest


@pytest.mark.parametrize("records", [
    [(b"F", "../escaped", 0o644, b"x")],
    [(b"F", "/tmp/escaped-absolute", 0o644, b"x")],
    [(b"D", "_internal", 0o755, b""), (b"F", "_internal/../../escaped", 0o644, b"x")],
    [(b"L", "_internal", 0o777, b"../.."), (b"F", "_internal/escaped", 0o644, b"x")],
    [(b"L", "link", 0o777, b"/etc/passwd")],
    [(b"F", ".ecr-bundle-complete", 0o644, b"forged record")],
], ids=["dotdot", "absolute", "nested-dotdot", "through-symlink", "absolute-symlink", "forged-record"])
def test_payload_paths_outside_the_tree_are_refused(
    binary: Path, launcher: Bundle, tmp_path: Path, records: list[tuple[bytes, str, int, bytes]]
) -> None:
    exe = crafted(launcher, records, tmp_path / "crafted")
    base = tmp_path / "a" / "b" / "runtime"
    proc = run(exe, launcher_env(base, tmp_path), "--version")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert re.fullmatch(r"ecr-credential-provider: error: [^\n]*(unsafe|corrupt|parent)[^\n]*\n", proc.stderr), \
        proc.stderr
    assert not (tmp_path / "a" / "b" / "escaped").exists() and not (tmp_path / "a" / "escaped").exists()
    assert not Path("/tmp/escaped-absolute").exists()
    assert {n for n in entries(base) if not n.endswith((".lock", ".use"))} == set()


# ---- a runtime or temporary directory we may not execute from -------------------------------------


def test_noexec_runtime_dir_falls_back(binary: Path, launcher: Bundle, tmp_path: Path, scratch_tmp: Path) -> None:
    """A hardened node's runtime directory on a noexec mount: nothing is unpacked there, the run works."""
    mnt = tmp_path / "noexec"
    mnt.mkdir()
    script = ('mount -t tmpfs -o noexec,mode=0700 tmpfs "$1" || exit 77; '
              'ECR_KUBELET_RUNTIME_DIR="$1/runtime" TMPDIR="$2" "$3" --version -v || exit 1; ls -A "$1/runtime"')
    proc = in_namespace(script, str(mnt), str(scratch_tmp), str(binary))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ecr-credential-provider ")
    assert re.search(r"warning: not using the persistent runtime directory \([^\n]*noexec[^\n]*\)", proc.stderr), \
        proc.stderr
    assert launcher.id not in proc.stdout.splitlines()[1:], "unpacked into a noexec directory"


def test_runtime_dir_that_refuses_exec_falls_back(binary: Path, launcher: Bundle, tmp_path: Path,
                                                  scratch_tmp: Path) -> None:
    """A tree unpacked before its mount became noexec (or an exec a security module denies): the
    failed exec (EACCES) makes the directory unusable like a read-only one."""
    base = tmp_path / "rt"
    run_version(binary, launcher_env(base))
    script = ('mount --bind "$1" "$1" && mount -o remount,bind,noexec "$1" || exit 77; '
              'ECR_KUBELET_RUNTIME_DIR="$1" TMPDIR="$2" exec "$3" --version -v')
    proc = in_namespace(script, str(base), str(scratch_tmp), str(binary))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ecr-credential-provider ")
    assert re.search(r"warning: not using the persistent runtime directory \(cannot execute [^\n]*\)", proc.stderr), \
        proc.stderr


def test_noexec_tmpdir_is_skipped(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    """Persistent base refused and TMPDIR noexec: the fallback goes on to /tmp (a fresh tmpfs here)."""
    refused, noexec = tmp_path / "refused", tmp_path / "noexec-tmp"
    script = FRESH_TMP + ('mount -t tmpfs -o noexec,mode=0700 tmpfs "$1" || exit 77; '
                          'ECR_KUBELET_RUNTIME_DIR="$2/runtime" TMPDIR="$1" "$BIN" --version -v || exit 1; '
                          'echo "tmp: $(ls -A /tmp | tr "\\n" " ")"')
    proc = in_namespace(script, str(binary), str(refused), "0777", str(noexec), "0700", "--", str(noexec),
                        str(refused))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ecr-credential-provider ")
    assert f"not using the temporary directory {noexec}" in proc.stderr
    assert SHARED in proc.stdout.split("tmp:", 1)[1].split()


# ---- the node's preload libraries --------------------------------------------------------------


MACHINES = {b"\x3e\x00": "x86_64", b"\xb7\x00": "aarch64"}
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def machine_of(binary: Path) -> str:
    with binary.open("rb") as fh:
        return MACHINES.get(fh.read(20)[18:20], "?")


def newer_glibc_preload(tmp_path: Path, binary: Path) -> Path:
    """A preload library that needs a glibc symbol version no carried libc has (GLIBC_2.99): linked
    against a stand-in libc.so.6 that defines it, as a library built on a newer distribution is.
    Built for the binary's machine: by the host's gcc, or for another machine by the gcc of that
    machine's build root (scripts/release makes it; emulated like the binary)."""
    (tmp_path / "stub.c").write_text("int ecr_newer_glibc(void) { return 0; }\n")
    (tmp_path / "stub.map").write_text("GLIBC_2.99 { global: ecr_newer_glibc; };\n")
    (tmp_path / "preload.c").write_text("extern int ecr_newer_glibc(void);\n"
                                        "__attribute__((constructor)) static void f(void) { ecr_newer_glibc(); }\n")
    (tmp_path / "stub").mkdir()
    lib = tmp_path / "newer-glibc-preload.so"
    script = ('set -e; cd "$1"; gcc -shared -fPIC -nostdlib -Wl,-soname,libc.so.6 -Wl,--version-script=stub.map '
              '-o stub/libc.so.6 stub.c; '
              'gcc -shared -fPIC -nostdlib -o newer-glibc-preload.so preload.c stub/libc.so.6')
    machine = machine_of(binary)
    if machine == os.uname().machine:
        if shutil.which("gcc") is None:
            pytest.fail("gcc is needed to build the test's preload library")
        cmd = ["sh", "-c", script, "sh", str(tmp_path)]
    else:
        roots = Path(__file__).resolve().parent.parent / "build" / "roots"
        root = roots / f"bookworm-{DEBIAN_ARCH.get(machine, machine)}"
        if not (root / "usr" / "bin" / "gcc").exists():
            pytest.skip(f"no {machine} compiler for the test's preload library (scripts/release makes {root})")
        in_root = Path(__file__).resolve().parent.parent / "scripts" / "in-root"
        cmd = [str(in_root), "--bind", str(tmp_path), str(root), "sh", "-c", script, "sh", str(tmp_path)]
    subprocess.run(cmd, check=True, timeout=600, capture_output=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return lib


def test_ld_preload_of_the_node_does_not_stop_the_bundle(binary: Path, launcher: Bundle, runtime: Path,
                                                        tmp_path: Path) -> None:
    lib = newer_glibc_preload(tmp_path, binary)
    for base in (runtime, _refused(tmp_path)):  # persistent and fallback
        proc = run(binary, launcher_env(base, tmp_path, LD_PRELOAD=str(lib)), "--version")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("ecr-credential-provider ")


def test_etc_ld_so_preload_of_the_node_does_not_stop_the_bundle(binary: Path, launcher: Bundle, runtime: Path,
                                                               tmp_path: Path) -> None:
    """/etc/ld.so.preload naming that library (in a private mount namespace: a copy of /etc with
    it mounted over /etc; the machine's own file is never touched)."""
    lib = newer_glibc_preload(tmp_path, binary)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "ld.so.preload").write_text(f"{lib}\n")
    run_version(binary, launcher_env(runtime))  # unpacked first: then only the static launcher and the bundle run
    script = 'mount --bind "$1" /etc || exit 77; exec "$2" --version'
    proc = in_namespace(script, str(etc), str(binary), env=launcher_env(runtime))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ecr-credential-provider ")
    if machine_of(binary) == os.uname().machine:
        # The test is able to fail: a dynamically linked program of the node does not start there.
        node = in_namespace('mount --bind "$1" /etc || exit 77; exec /bin/true', str(etc))
        assert node.returncode != 0 and "GLIBC_2.99" in node.stderr, node


# ---- a stuck unpacker --------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["lock", "use"], ids=["unpacker", "pruner"])
def test_a_stopped_unpacker_does_not_hang_every_run(binary: Path, launcher: Bundle, runtime: Path,
                                                    scratch_tmp: Path, which: str) -> None:
    """A process holding the unpack lock (or, as a pruner does, the .use lock) exclusively is
    stopped (SIGSTOP): the wait is bounded, then the run falls back and says why at -v."""
    runtime.mkdir(mode=0o700)
    lock = runtime / f"{launcher.id}.{which}"
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, signal, sys\n"
                               "f = open(sys.argv[1], 'a')\nfcntl.flock(f, fcntl.LOCK_EX)\n"
                               "os.kill(os.getpid(), signal.SIGSTOP)\n", str(lock)])
    try:
        wait_until(lambda: Path(f"/proc/{holder.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T",
                   "the lock holder to stop")
        proc = subprocess.run([str(binary), "--version", "-v"], capture_output=True, text=True,
                              env=launcher_env(runtime, scratch_tmp), timeout=90, check=False)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("ecr-credential-provider ")
        assert re.search(rf"warning: not using the persistent runtime directory \([^\n]*{lock}[^\n]*\)", proc.stderr), \
            proc.stderr
        assert launcher.id not in entries(runtime)
    finally:
        holder.kill()
        holder.wait()


# ---- disk space and other versions -------------------------------------------------------------


def revision(launcher: Bundle, dest: Path, level: int) -> Bundle:
    """Another version of the binary: the same files compressed at another level (so another
    payload digest, another bundle id), as a new release is to the runtime directory."""
    payload = zlib.decompress(launcher.raw[launcher.payload_offset : launcher.payload_offset + launcher.payload_length])
    data = zlib.compress(payload, level)
    outer = launcher.outer()
    trailer = LAUNCHER_TRAILER.pack(len(outer), len(data), hashlib.sha256(data).hexdigest().encode(),
                                    launcher.entry.encode(), launcher.loader.encode(), launcher.libdir.encode(),
                                    LAUNCHER_MAGIC)
    dest.write_bytes(outer + data + trailer)
    dest.chmod(0o755)
    return Bundle(dest)


def test_two_versions_sharing_a_runtime_dir_do_not_prune_each_other(binary: Path, launcher: Bundle, runtime: Path,
                                                                    tmp_path: Path) -> None:
    other = revision(launcher, tmp_path / "other-version", 1)
    other_exe = tmp_path / "other-version"
    env = launcher_env(runtime)
    for exe in (binary, other_exe):
        assert "unpacked the bundle" in run_version(exe, env, "-v").stderr
    for exe in (binary, other_exe, binary, other_exe):
        assert run_version(exe, env, "-v").stderr == "", f"{exe.name} unpacked again"
    third = revision(launcher, tmp_path / "third-version", 6)
    run_version(tmp_path / "third-version", env)
    assert {launcher.id, other.id, third.id} & entries(runtime) == {other.id, third.id}, \
        "a third version keeps only the newest other one"


def test_a_full_disk_prunes_the_old_tree_that_makes_room(binary: Path, launcher: Bundle, tmp_path: Path,
                                                         scratch_tmp: Path) -> None:
    """A small file system holding an old version's complete tree: the new one is unpacked after the
    old one is removed, not into the fallback."""
    size = sum(len(e.data) for e in launcher.entries)
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = ('mount -t tmpfs -o size=$(( $4 / 1024 ))k,mode=0700 tmpfs "$1" || exit 77; '
              'mkdir -p "$1/runtime/$5" && head -c "$(( $4 * 3 / 4 ))" /dev/zero > "$1/runtime/$5/filler" && '
              'echo old > "$1/runtime/$5/.ecr-bundle-complete" || exit 1; '
              'ECR_KUBELET_RUNTIME_DIR="$1/runtime" TMPDIR="$2" "$3" --version -v || exit 1; '
              'echo "runtime: $(ls -A "$1/runtime" | tr "\\n" " ")"')
    proc = in_namespace(script, str(mnt), str(scratch_tmp), str(binary), str(size + size * 3 // 4 // 2), OTHER_ID)
    assert proc.returncode == 0, proc.stderr
    assert f"unpacked the bundle into {mnt}/runtime/{launcher.id}" in proc.stderr, proc.stderr
    assert "temporary directory" not in proc.stderr
    assert OTHER_ID not in proc.stdout.split("runtime:", 1)[1].split()


# ---- the watchdog --------------------------------------------------------------------------------


def test_a_byte_in_the_watchdog_pipe_does_not_remove_the_tree(binary: Path, launcher: Bundle, tmp_path: Path,
                                                              scratch_tmp: Path) -> None:
    """Only end of file (the program gone) ends the watchdog's wait, not a byte written into the
    pipe through /proc/PID/fd."""
    env = launcher_env(_refused(tmp_path), scratch_tmp)
    rest = _no_shared_tree(scratch_tmp)
    with waiting_program(binary, env) as proc:
        (tree,) = (scratch_tmp / n for n in entries(scratch_tmp) - rest)
        pipes = {}
        for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
            target = os.readlink(fd)
            if int(fd.name) > 2 and target.startswith("pipe:"):
                pipes[target] = fd
        assert len(pipes) == 1, pipes
        ((pipe, fd),) = pipes.items()
        watchdogs = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != proc.pid
                     and any(_readlink(f) == pipe for f in _fds(p))]
        assert len(watchdogs) == 1, watchdogs
        with open(fd, "wb", buffering=0) as writer:
            writer.write(b"x")
            wait_until(lambda: _pipe_bytes(writer.fileno()) == 0, "the watchdog to read the byte")
        # Then it waits in read(2) again (the fix) or removes the tree and exits (the defect).
        read_syscall = {"x86_64": "0", "aarch64": "63"}[os.uname().machine]
        wait_until(lambda: not Path(f"/proc/{watchdogs[0]}").exists()
                   or _readtext(Path(f"/proc/{watchdogs[0]}/syscall")).split()[:1] == [read_syscall],
                   "the watchdog to wait again or end")
        assert (tree / RECORD).is_file(), "the watchdog removed the tree of a running program"
        proc.communicate(b"not json\n", timeout=60)
    wait_until(lambda: entries(scratch_tmp) == rest, "the watchdog to remove the temporary bundle")


def _fds(proc_dir: Path) -> list[Path]:
    try:
        return list((proc_dir / "fd").iterdir())
    except OSError:
        return []


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _pipe_bytes(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]  # type: ignore[no-any-return]


def _readtext(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
