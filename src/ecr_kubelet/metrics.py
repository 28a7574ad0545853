"""Prometheus counters across runs, in a text-format file for node_exporter's textfile collector.

`--metrics-file PATH` / ECR_KUBELET_METRICS_FILE: every run (each lives ~100 ms) adds its increments to
the file under a lock, so the counters survive the process:

* ecr_kubelet_requests_total{mode, outcome, exit_code}: runs by outcome (answered = credentials,
  no_credentials = a valid empty answer or the helper's "not found", failed) and exit code
* ecr_kubelet_cache_hits_total, ecr_kubelet_cache_misses_total, ecr_kubelet_cache_stale_served_total
* ecr_kubelet_aws_calls_total{service, operation, result[, code]}: every HTTP attempt (retries too), by
  result (success, throttled, denied, client_error, server_error, network_error) and AWS's error code
* ecr_kubelet_last_success_timestamp_seconds / ecr_kubelet_last_failure_timestamp_seconds: end of the
  last run that exited 0 / non-zero (Unix time)

Root writes this file on every node, so: the directory must exist and be one that only root or we can
change (the rule: trust.py); the file is never opened through a symlink; a new version is written to a
temp file in the same directory (not named *.prom, so the collector never reads half a file) and renamed
over the old one; a lock file beside it (`.NAME.lock`) serialises the read-modify-write across
processes, so concurrent runs never lose an increment. Every failure is a warning: metrics never fail a
pull.

The text format is rendered here rather than by prometheus_client: importing that library costs more
than the rest of a cache hit, and a run only needs to re-emit a handful of counters. The tests parse the
output with prometheus_client's own parser. Standard library only.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import re
import stat
import time
from contextlib import suppress

from ecr_kubelet import logs
from ecr_kubelet.observe import Observer
from ecr_kubelet.trust import Untrusted, trusted_directory

TYPE_CHECKING = False
if TYPE_CHECKING:
    StrPath = str | os.PathLike[str]

log = logs.get(__name__)

LOCK_TIMEOUT = 10.0  # after the answer is written; with the 45 s deadline still inside the kubelet's 60 s
_LOCK_POLL = 0.005
_MAX_BYTES = 1024 * 1024
_MAX_SERIES = 2000  # a bound on what a hostile or broken file can make us carry

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]

# name -> (type, help), in the order they are written.
FAMILIES: dict[str, tuple[str, str]] = {
    "ecr_kubelet_requests_total": ("counter", "Runs of the credential provider by mode, outcome and exit code."),
    "ecr_kubelet_cache_hits_total": ("counter", "Runs answered from the token cache without an AWS call."),
    "ecr_kubelet_cache_misses_total": ("counter", "Runs that had to fetch a token (no fresh cache entry)."),
    "ecr_kubelet_cache_stale_served_total": (
        "counter", "Runs whose refresh failed and that served the still-valid cached token."),
    "ecr_kubelet_aws_calls_total": (
        "counter", "AWS API call attempts (retries included) by service, operation, result and error code."),
    "ecr_kubelet_last_success_timestamp_seconds": ("gauge", "Unix time at the end of the last run that exited 0."),
    "ecr_kubelet_last_failure_timestamp_seconds": (
        "gauge", "Unix time at the end of the last run that exited non-zero."),
}
_ALWAYS = ("ecr_kubelet_cache_hits_total", "ecr_kubelet_cache_misses_total", "ecr_kubelet_cache_stale_served_total")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


class MetricsError(Exception):
    """The metrics file cannot be updated safely (the pull goes on regardless)."""


def increments(observer: Observer, mode: str, exit_code: int) -> dict[Key, float]:
    """The counters this run adds."""
    if observer.not_found:
        outcome = "no_credentials"  # also the Docker helper's "not found", which exits 1
    elif exit_code != 0:
        outcome = "failed"
    else:
        outcome = "answered" if observer.credentials else "no_credentials"
    add: dict[Key, float] = {}

    def bump(name: str, labels: Labels = (), by: float = 1) -> None:
        add[(name, labels)] = add.get((name, labels), 0) + by

    bump("ecr_kubelet_requests_total", (("mode", mode), ("outcome", outcome), ("exit_code", str(exit_code))))
    for name in _ALWAYS:
        bump(name, (), 0)  # present from the first run, so rate() has a start
    if observer.cache == "hit":
        bump("ecr_kubelet_cache_hits_total")
    elif observer.cache == "miss":
        bump("ecr_kubelet_cache_misses_total")
    if observer.stale:
        bump("ecr_kubelet_cache_stale_served_total")
    for call in observer.calls:
        labels: Labels = (("service", call.service), ("operation", call.operation), ("result", call.result))
        if call.code:
            labels += (("code", call.code),)
        bump("ecr_kubelet_aws_calls_total", labels)
    return add


def record(path: StrPath, observer: Observer, mode: str, exit_code: int, lock_timeout: float = LOCK_TIMEOUT) -> None:
    """Add this run to the metrics file; any failure is logged as a warning, never raised."""
    try:
        update(path, increments(observer, mode, exit_code), exit_code == 0, time.time(), lock_timeout)
    except MetricsError as exc:
        log.warning("metrics file %s not updated: %s", path, exc)
    except OSError as exc:
        log.warning("metrics file %s not updated: %s", path, exc.strerror or exc)
    except Exception as exc:  # a bug must not fail the pull either
        log.warning("metrics file %s not updated: %s: %s", path, type(exc).__name__, exc)


def update(path: StrPath, add: dict[Key, float], success: bool, now: float,
           lock_timeout: float = LOCK_TIMEOUT) -> None:
    """Read-modify-write the file under its lock: counters are added, the timestamp gauge set."""
    directory, name = os.path.split(os.fspath(path))
    if not name or name in (".", "..") or name.startswith("."):
        raise MetricsError("the file name must not be empty or start with a dot")
    dir_fd = _open_trusted_directory(directory)
    try:
        lock_fd = _open_no_follow(f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o600, dir_fd)
        try:
            _lock(lock_fd, lock_timeout)
            series = parse(_read(name, dir_fd))
            for key, value in add.items():
                series[key] = series.get(key, 0.0) + value
            gauge = "ecr_kubelet_last_success_timestamp_seconds" if success else \
                "ecr_kubelet_last_failure_timestamp_seconds"
            series[(gauge, ())] = now
            _write(name, dir_fd, render(series).encode())
        finally:
            os.close(lock_fd)  # releases the lock
    finally:
        os.close(dir_fd)


def _open_trusted_directory(directory: str) -> int:
    try:
        real = trusted_directory(directory)
        # Only root or we can change the resolved path (trust.py): it still names what was checked.
        return os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except Untrusted as exc:
        raise MetricsError(f"refusing its directory: {exc}") from None
    except OSError as exc:
        raise MetricsError(f"cannot open its directory: {exc.strerror}") from None


def _open_no_follow(name: str, flags: int, mode: int, dir_fd: int) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MetricsError(f"refusing {name}: it is a symbolic link") from None
        raise


def _lock(fd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise MetricsError(f"its lock was held by another run for {timeout:g}s") from None
            time.sleep(_LOCK_POLL)


def _read(name: str, dir_fd: int) -> str:
    try:
        fd = _open_no_follow(name, os.O_RDONLY, 0, dir_fd)
    except FileNotFoundError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MetricsError("refusing it: not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= _MAX_BYTES:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > _MAX_BYTES:
            raise MetricsError(f"refusing it: larger than {_MAX_BYTES} bytes")
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _write(name: str, dir_fd: int, body: bytes) -> None:
    tmp = f".{name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    fd = _open_no_follow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd)
    try:
        try:
            os.fchmod(fd, 0o644)  # the collector may run as another user; the umask must not hide it
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    with suppress(OSError):
        os.fsync(dir_fd)


def parse(text: str) -> dict[Key, float]:
    """Our own series from a previous version of the file; anything else is dropped."""
    series: dict[Key, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None or match[1] not in FAMILIES or len(series) >= _MAX_SERIES:
            continue
        labels = _parse_labels(match[2] or "")
        try:
            value = float(match[3])
        except ValueError:
            continue
        if labels is None or not math.isfinite(value) or value < 0:
            continue
        series[(match[1], labels)] = value
    return series


def _parse_labels(text: str) -> Labels | None:
    pairs: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if match is None:
            return None
        value = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], match[2])
        pairs.append((match[1], value))
        pos = match.end()
    return tuple(pairs)


def render(series: dict[Key, float]) -> str:
    lines: list[str] = []
    for name, (kind, help_text) in FAMILIES.items():
        samples = sorted((labels, value) for (n, labels), value in series.items() if n == name)
        if not samples:
            continue
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
