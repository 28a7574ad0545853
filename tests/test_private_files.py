"""Reading, replacing and locking the files a run keeps (src/ecr_kubelet/private_files.py)."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecr_kubelet import private_files
from ecr_kubelet.private_files import TooLarge, UnusableFile, lock, open_lock, read_file, read_usable, write_file
from helpers import blocked_waiters, in_thread

NOBODY = 65534


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "private"
    path.mkdir(mode=0o700)
    return path


def _file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


# ---- read_file ---------------------------------------------------------------------------------------


def test_reads_a_whole_regular_file_up_to_its_limit(directory: Path) -> None:
    path = _file(directory / "f", b"x" * 10)
    assert read_file(str(path), 10) == b"x" * 10
    assert read_file("f", 10, dir_fd=os.open(directory, os.O_RDONLY)) == b"x" * 10


def test_a_file_larger_than_the_limit_is_refused_not_cut(directory: Path) -> None:
    path = _file(directory / "f", b"x" * 11)
    with pytest.raises(TooLarge, match="larger than 10 bytes"):
        read_file(str(path), 10)
    assert read_usable(str(path), 10) is None


def test_nothing_there_is_none(directory: Path) -> None:
    assert read_file(str(directory / "missing"), 10) is None


def test_a_symbolic_link_is_never_followed(directory: Path) -> None:
    target = _file(directory / "target", b"secret")
    (directory / "link").symlink_to(target)
    with pytest.raises(UnusableFile, match="a symbolic link") as caught:
        read_file(str(directory / "link"), 100)
    assert caught.value.what == "unreadable"


def test_a_fifo_neither_blocks_nor_is_read(directory: Path) -> None:
    fifo = directory / "fifo"
    os.mkfifo(fifo, 0o600)
    thread, outcome = in_thread(lambda: read_file(str(fifo), 100))
    thread.join(30)
    if thread.is_alive():  # let the blocked open go so the daemon thread can end
        os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
        pytest.fail("opening a FIFO blocked")
    assert isinstance(outcome[0], UnusableFile) and outcome[0].reason == "not a regular file"


def test_a_directory_is_not_a_regular_file(directory: Path) -> None:
    (directory / "d").mkdir()
    with pytest.raises(UnusableFile, match="not a regular file"):
        read_file(str(directory / "d"), 100)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602], ids=oct)
def test_private_refuses_a_file_others_may_read_or_write(directory: Path, mode: int) -> None:
    path = _file(directory / "f", b"token", mode)
    assert read_file(str(path), 100) == b"token"  # not asked to be private: the metrics file is 0644
    with pytest.raises(UnusableFile, match="not private to this user"):
        read_file(str(path), 100, private=True)
    path.chmod(0o600)
    assert read_file(str(path), 100, private=True) == b"token"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another uid")
def test_private_refuses_a_file_of_another_user(directory: Path) -> None:
    path = _file(directory / "f", b"token")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(UnusableFile, match="not private to this user"):
        read_file(str(path), 100, private=True)


# ---- write_file --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o644], ids=oct)
def test_write_replaces_the_file_with_its_mode_whatever_the_umask(directory: Path, mode: int) -> None:
    _file(directory / "f", b"old", 0o666)
    previous = os.umask(0o077)
    try:
        write_file(str(directory), "f", b"new", mode=mode)
    finally:
        os.umask(previous)
    assert (directory / "f").read_bytes() == b"new"
    assert stat.S_IMODE((directory / "f").stat().st_mode) == mode
    assert [p.name for p in directory.iterdir()] == ["f"]  # no temp file left


def test_write_through_a_directory_descriptor(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_file(dir_fd, "f", b"body", temp_prefix=".f.", temp_suffix=".tmp")
    finally:
        os.close(dir_fd)
    assert (directory / "f").read_bytes() == b"body"


def test_write_replaces_a_link_at_the_name_never_its_target(directory: Path, tmp_path: Path) -> None:
    target = _file(tmp_path / "elsewhere", b"precious")
    (directory / "f").symlink_to(target)
    write_file(str(directory), "f", b"ours")
    assert not (directory / "f").is_symlink() and (directory / "f").read_bytes() == b"ours"
    assert target.read_bytes() == b"precious"


def test_a_name_planted_where_the_temp_file_goes_is_never_written_through(
    directory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _file(tmp_path / "elsewhere", b"precious")
    names = iter([b"\x00" * 6, b"\x01" * 6])
    monkeypatch.setattr(os, "urandom", lambda _n: next(names))
    (directory / f".tmp-{os.getpid()}.{'00' * 6}.tmp").symlink_to(target)
    write_file(str(directory), "f", b"ours")
    assert (directory / "f").read_bytes() == b"ours" and target.read_bytes() == b"precious"


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _file(directory / "f", b"old")

    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        write_file(str(directory), "f", b"new")
    assert [p.name for p in directory.iterdir()] == ["f"] and (directory / "f").read_bytes() == b"old"


# ---- open_lock ---------------------------------------------------------------------------------------


def test_a_lock_file_is_created_private(directory: Path) -> None:
    previous = os.umask(0)
    try:
        os.close(open_lock(str(directory / "l")))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((directory / "l").stat().st_mode) == 0o600


def test_a_fifo_or_link_at_the_lock_path_is_refused_without_blocking(directory: Path, tmp_path: Path) -> None:
    os.mkfifo(directory / "fifo", 0o600)
    with pytest.raises(UnusableFile, match="not a regular file"):
        open_lock(str(directory / "fifo"))
    (directory / "link").symlink_to(_file(tmp_path / "elsewhere", b""))
    with pytest.raises(OSError) as caught:
        open_lock(str(directory / "link"))
    assert caught.value.errno == errno.ELOOP


# ---- lock: the deadline ------------------------------------------------------------------------------


class Held:
    """A lock file held through one open file description (`holder`), and our own descriptor `fd` of it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.holder = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.holder, fcntl.LOCK_EX)
        self.fd = os.open(path, os.O_RDWR)

    def release(self) -> None:
        fcntl.flock(self.holder, fcntl.LOCK_UN)


@pytest.fixture
def held(directory: Path) -> Iterator[Held]:
    lock_file = Held(directory / "l")
    yield lock_file
    os.close(lock_file.fd)
    os.close(lock_file.holder)


class Clock:
    """The polling wait's clock: its sleep advances it, and can let the lock go at a given time."""

    def __init__(self, release_at: float | None = None, held: Held | None = None) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.release_at, self.held = release_at, held

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.slept.append(seconds)
        self.now += seconds
        if self.release_at is not None and self.held is not None and self.now >= 100.0 + self.release_at:
            self.held.release()
            self.release_at = None


def test_a_free_lock_is_taken_at_once(directory: Path) -> None:
    fd = open_lock(str(directory / "l"))
    clock = Clock()
    try:
        assert lock(fd, 0.0, clock=clock, sleep=clock.sleep) is True
    finally:
        os.close(fd)
    assert clock.slept == []


def test_a_polling_wait_ends_exactly_at_its_deadline(held: Held) -> None:
    clock = Clock()
    told: list[bool] = []
    # Outside the main thread no timer signal can end a kernel wait: the wait polls.
    thread, outcome = in_thread(lambda: lock(held.fd, 7.5, waiting=lambda: told.append(True), clock=clock,
                                              sleep=clock.sleep))
    thread.join(30)
    assert outcome == [False] and told == [True]
    assert clock.now == 107.5  # waited its whole timeout, and not a moment past it
    assert max(clock.slept) <= private_files.POLL_CAP


def test_a_polling_wait_takes_the_lock_when_the_holder_lets_go(held: Held) -> None:
    clock = Clock(release_at=1.0, held=held)
    thread, outcome = in_thread(lambda: lock(held.fd, 30.0, clock=clock, sleep=clock.sleep))
    thread.join(30)
    assert outcome == [True] and 101.0 <= clock.now < 101.0 + private_files.POLL_CAP


@pytest.mark.parametrize("timeout", [0.0, -3.0])
def test_no_time_left_means_one_try_and_no_wait(held: Held, timeout: float) -> None:
    clock = Clock()
    assert lock(held.fd, timeout, clock=clock, sleep=clock.sleep) is False
    assert clock.slept == [] and clock.now == 100.0
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_kernel_wait_ends_when_the_holder_lets_go(held: Held) -> None:
    def release_once_blocked() -> None:
        while not blocked_waiters(held.path):  # an event the kernel reports, not a guessed delay
            time.sleep(0.001)
        held.release()

    releaser = threading.Thread(target=release_once_blocked)
    releaser.start()
    clock = Clock()
    try:  # the main thread: a kernel wait; the polling clock never moves
        assert lock(held.fd, 30.0, clock=clock, sleep=clock.sleep) is True
    finally:
        releaser.join(30)
    assert clock.slept == []
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) == signal.SIG_DFL


def test_a_kernel_wait_gives_up_at_its_timeout_and_leaves_no_timer(held: Held) -> None:
    started = time.monotonic()
    assert private_files._wait_in_kernel(held.fd, fcntl.LOCK_EX, 0.2) is False  # the timer signal ended it
    assert time.monotonic() - started >= 0.2
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) == signal.SIG_DFL


def test_a_running_timer_or_another_thread_means_polling(held: Held) -> None:
    fd = held.fd
    signal.setitimer(signal.ITIMER_REAL, 60)  # the deadline's backstop, say
    try:
        assert private_files._wait_in_kernel(fd, fcntl.LOCK_EX, 1.0) is None
        clock = Clock()
        assert lock(fd, 2.0, clock=clock, sleep=clock.sleep) is False and clock.now == 102.0
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 50  # untouched
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    thread, outcome = in_thread(lambda: private_files._wait_in_kernel(fd, fcntl.LOCK_EX, 1.0))
    thread.join(30)
    assert outcome == [None]


def test_a_shared_lock_is_taken_beside_other_shared_holders_not_beside_an_exclusive_one(directory: Path) -> None:
    path = str(directory / "l")
    reader, other, writer = open_lock(path), open_lock(path), open_lock(path)
    try:
        assert lock(reader, 0.0, shared=True) is True
        assert lock(other, 0.0, shared=True) is True  # beside it, at once
        assert private_files.try_lock(writer) is False  # an exclusive one waits for both
        os.close(reader)
        os.close(other)
        reader = other = -1
        assert private_files.try_lock(writer) is True
        other = open_lock(path)
        assert lock(other, 0.05, shared=True) is False  # behind the exclusive one
    finally:
        for fd in (reader, other, writer):
            if fd >= 0:
                os.close(fd)


def test_a_shared_wait_in_the_kernel_ends_the_moment_the_exclusive_holder_lets_go(held: Held) -> None:
    def release_once_blocked() -> None:
        while not blocked_waiters(held.path):  # an event the kernel reports, not a guessed delay
            time.sleep(0.001)
        fcntl.flock(held.holder, fcntl.LOCK_SH)  # the holder is done, and stays as a reader

    releaser = threading.Thread(target=release_once_blocked)
    releaser.start()
    try:
        assert lock(held.fd, 30.0, shared=True) is True  # beside the holder, now a reader too
    finally:
        releaser.join(30)


def test_a_file_system_that_cannot_lock_raises(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_locks(_fd: int, _op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    fd = open_lock(str(directory / "l"))
    monkeypatch.setattr(fcntl, "flock", no_locks)
    try:
        with pytest.raises(OSError) as caught:
            lock(fd, 1.0)
    finally:
        os.close(fd)
    assert caught.value.errno == errno.ENOLCK
