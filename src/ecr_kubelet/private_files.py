"""The files a run keeps between runs: read, replaced and locked the one careful way.

The token cache (its entries, `.attempts` markers and locks), the Docker helper's host notes and the
metrics file all live in directories only root or we can change (trust.py decides that, not this
module). What every one of them needs, written once:

* `read_file`: at most a bounded number of bytes of a regular file, never through a symbolic link and
  never blocking on a FIFO or device planted at the path; with `private`, only a file that is ours and
  that no one else may read or write.
* `write_file`: replace a file atomically: a new temp file in the same directory (created exclusively,
  no link followed), fsync, rename over the name, fsync of the directory. 0600 unless told otherwise.
* `open_lock`, `try_lock`, `lock` and `unlock`: a `flock`, exclusive or shared, that waits up to a timeout, the
  caller's remaining deadline, and never past it: blocked in the kernel, which wakes the waiter the
  moment the holder lets go, ended by a one-shot timer signal; polling where no timer signal can be
  used.

Standard library only, and only modules the interpreter has built in: a cache hit reads with it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# The polling wait (outside the main thread, or while another timer runs) starts at this interval and
# doubles up to the cap: many waiters leave the CPU to the holder, a short wait stays short.
POLL_FIRST = 0.005
POLL_CAP = 0.05
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY


class UnusableFile(Exception):
    """Something is at the path, but it must not be used: `what` ("unreadable" or "unusable") and
    `reason` (a few words, no path) say why."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(reason)
        self.what = what
        self.reason = reason


class TooLarge(UnusableFile):
    """A regular file larger than the caller's limit."""


def read_file(path: str, limit: int, *, dir_fd: int | None = None, private: bool = False) -> bytes | None:
    """The whole of the regular file at `path` (relative to `dir_fd` if given), at most `limit` bytes;
    None if nothing is there. Raises UnusableFile for anything else at the path: a symbolic link, a
    FIFO, device or directory, a file larger than `limit` (TooLarge), one that cannot be read, and with
    `private` one that is not ours or that others may read or write."""
    try:
        fd = os.open(path, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or type(exc).__name__
        raise UnusableFile("unreadable", reason) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnusableFile("unusable", "not a regular file")
        if private and (info.st_uid != os.geteuid() or info.st_mode & 0o077):
            raise UnusableFile("unusable", "not private to this user")
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise UnusableFile("unreadable", exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise TooLarge("unusable", f"larger than {limit} bytes")
    return data


def read_usable(path: str, limit: int, *, dir_fd: int | None = None, private: bool = False) -> bytes | None:
    """read_file, with None for a file that must not be used as for one that is not there."""
    try:
        return read_file(path, limit, dir_fd=dir_fd, private=private)
    except UnusableFile:
        return None


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def write_file(directory: str | int, name: str, body: bytes, *, mode: int = 0o600,
               temp_prefix: str = ".tmp-", temp_suffix: str = ".tmp") -> None:
    """Atomically replace `name` in `directory` (a path or an open directory descriptor) with `body`,
    mode `mode` whatever the umask. Readers see the old file or the new one, never a part; a crash
    leaves at most a temp file `temp_prefix`...`temp_suffix` (removed here when the write fails).
    Raises OSError."""
    if isinstance(directory, int):
        _write_in(directory, name, body, mode, temp_prefix, temp_suffix)
        return
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _write_in(dir_fd, name, body, mode, temp_prefix, temp_suffix)
    finally:
        os.close(dir_fd)


def _write_in(dir_fd: int, name: str, body: bytes, mode: int, temp_prefix: str, temp_suffix: str) -> None:
    fd, temp = _create_temp(dir_fd, temp_prefix, temp_suffix)
    try:
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode passes through the umask; the file's readers must not
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:  # noqa: SIM105 (contextlib is not loaded here)
            os.unlink(temp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    try:  # noqa: SIM105 (the rename survives a crash once the directory is on disk)
        os.fsync(dir_fd)
    except OSError:
        pass


def _create_temp(dir_fd: int, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file of ours (0600 until written) under a name no one else uses: created exclusively, so a
    name planted in the directory is never written through. tempfile would cost an import on a miss."""
    for _ in range(100):
        temp = f"{prefix}{os.getpid()}.{os.urandom(6).hex()}{suffix}"
        try:
            return os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=dir_fd), temp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name")


def open_lock(path: str, *, dir_fd: int | None = None) -> int:
    """The lock file at `path` (created 0600 if missing), opened without following a link and without
    blocking on a FIFO: the descriptor, which the caller closes to let the lock go. Raises OSError, or
    UnusableFile if what is there is not a regular file."""
    fd = os.open(path, _LOCK_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise UnusableFile("unusable", "not a regular file")
    return fd


def try_lock(fd: int) -> bool:
    """Take the exclusive flock of `fd` if no one holds it (True), without waiting. Raises OSError when
    the file system cannot lock."""
    return _try(fd, fcntl.LOCK_EX)


def unlock(fd: int) -> None:
    """Let the flock of `fd` go, keeping the descriptor open."""
    fcntl.flock(fd, fcntl.LOCK_UN)


def lock(fd: int, timeout: float, *, shared: bool = False, waiting: Callable[[], None] | None = None,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Take the flock of `fd`, exclusive, or `shared` with other shared holders, waiting at most
    `timeout` seconds (what remains of the caller's deadline; at most one try when it is not positive).
    A shared lock taken where this descriptor holds the exclusive one, or the other way round, replaces
    it (not atomically: flock lets go first). True: held; False: the wait ran out. `waiting` is called
    once before a wait begins. Raises OSError when the file system cannot lock. `clock` and `sleep` are
    the polling wait's, injected in tests."""
    operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    end = clock() + timeout
    if _try(fd, operation):
        return True
    if waiting is not None:
        waiting()
    acquired = _wait_in_kernel(fd, operation, end - clock())
    if acquired is None:
        acquired = _poll(fd, operation, end, clock, sleep)
    return acquired


def _try(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class _WaitOver(Exception):
    """The timer of a blocked lock wait went off."""


def _wait_over(_signum: int, _frame: object) -> None:
    raise _WaitOver


def _wait_in_kernel(fd: int, operation: int, timeout: float) -> bool | None:
    """Wait for the lock in the kernel, which wakes us the moment its holder lets go; a one-shot timer
    signal ends the wait. None where that cannot be done: in a thread other than the main one, or while
    another timer runs (the deadline's backstop), whose signal this must not take.

    At node boot dozens of processes wait for one fetch: blocked, they leave the CPU to the process
    that fetches (polling, they slowed it by a third on two cores). `_signal` is signal's C module:
    signal.py would load enum (about 4 ms) into every waiter.
    """
    if TYPE_CHECKING:
        import signal as _signal  # the same functions, typed
    else:
        import _signal

    if timeout <= 0:
        return False
    if _signal.getitimer(_signal.ITIMER_REAL)[0] > 0:
        return None
    try:
        previous = _signal.signal(_signal.SIGALRM, _wait_over)
    except ValueError:  # not the main thread
        return None
    try:
        _signal.setitimer(_signal.ITIMER_REAL, timeout)
        try:
            fcntl.flock(fd, operation)  # EINTR from the timer raises _WaitOver (PEP 475)
            return True
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
    except _WaitOver:
        return False  # even if the lock came a moment before the timer: the caller goes on without it
    finally:
        _signal.signal(_signal.SIGALRM, previous)


def _poll(fd: int, operation: int, end: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> bool:
    interval = POLL_FIRST
    while True:
        if _try(fd, operation):
            return True
        left = end - clock()
        if left <= 0:
            return False
        sleep(min(interval, left))  # never past the end
        interval = min(interval * 2, POLL_CAP)
