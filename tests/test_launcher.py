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
import subprocess
import tempfile
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
        wait_until(lambda: entries(scratch_tmp) == set(), f"{name}: the temporary bundle to be removed")


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
    run(binary, launcher_env(runtime), "--version")
    assert OTHER_ID in entries(runtime), "pruning happens on a new version's first run, not on every run"


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


def test_fallback_execs_too_and_removes_its_directory(
    binary: Path, launcher: Bundle, stub: StubClient, provider_env: dict[str, str], tmp_path: Path, scratch_tmp: Path
) -> None:
    env = dict(provider_env, ECR_KUBELET_RUNTIME_DIR=str(_refused(tmp_path)), TMPDIR=str(scratch_tmp))
    with waiting_program(binary, env) as proc:
        loaders = [f for f in mapped_files(proc.pid) if f.endswith(launcher.loader)]
        assert len(loaders) == 1 and loaders[0].startswith(f"{scratch_tmp}/ecr-credential-provider-"), loaders
        assert children_of(proc.pid) == []
        assert ask(proc)["auth"]
    wait_until(lambda: entries(scratch_tmp) == set(), "the watchdog to remove the temporary bundle")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_fallback_leaves_nothing_behind(binary: Path, launcher: Bundle, tmp_path: Path, scratch_tmp: Path,
                                               sig: int) -> None:
    env = launcher_env(_refused(tmp_path), scratch_tmp)
    with waiting_program(binary, env) as proc:
        assert len(entries(scratch_tmp)) == 1
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    assert proc.returncode == -sig
    wait_until(lambda: entries(scratch_tmp) == set(), "the watchdog to remove the temporary bundle")


def test_fallback_passes_the_exit_status_through(binary: Path, launcher: Bundle, tmp_path: Path,
                                                 scratch_tmp: Path) -> None:
    ok = run(binary, launcher_env(tmp_path / "ok"), stdin=b"not json\n")
    refused = run(binary, launcher_env(_refused(tmp_path), scratch_tmp), stdin=b"not json\n")
    assert ok.returncode not in (0, 1)  # a bad request, not a launcher failure
    assert (ok.returncode, ok.stdout, ok.stderr) == (refused.returncode, refused.stdout, refused.stderr)


def test_untrusted_tmpdir_is_not_used(binary: Path, launcher: Bundle, tmp_path: Path) -> None:
    """TMPDIR in a world-writable, non-sticky directory: the fallback uses /tmp instead."""
    evil = _mkdir(tmp_path / "evil", 0o777)
    proc = run_version(binary, launcher_env(_refused(tmp_path), evil))
    assert proc.returncode == 0
    assert entries(evil) == set()


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
    wait_until(lambda: entries(scratch_tmp) == set(), "the watchdog to remove the temporary bundle")


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
    env.update(ECR_KUBELET_RUNTIME_DIR=str(runtime), AWS_CONFIG_FILE=str(config), LD_LIBRARY_PATH="/opt/node-libs")
    request = json.dumps(make_request("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app")) + "\n"
    proc = run(binary, env, stdin=request.encode())
    assert proc.returncode == 0, proc.stderr
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert seen.get("LD_LIBRARY_PATH") == "/opt/node-libs"
    assert "LD_LIBRARY_PATH_ORIG" not in seen
    assert "ECR_KUBELET_ARGV0" not in seen


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
