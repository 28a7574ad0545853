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

import math
import os
import re
import time

from ecr_kubelet import logs, private_files
from ecr_kubelet.observe import Observer
from ecr_kubelet.trust import Untrusted, trusted_directory

TYPE_CHECKING = False
if TYPE_CHECKING:
    StrPath = str | os.PathLike[str]

log = logs.get(__name__)

# The longest a run waits for another run's update, at most: the callers pass what remains of their
# deadline, so the update never outlasts the run's answer.
LOCK_TIMEOUT = 10.0
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
    """Add this run to the metrics file, waiting at most `lock_timeout` seconds (what remains of the
    run's deadline) for another run's update; any failure is logged as a warning, never raised."""
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
    """Read-modify-write the file under its lock, waited for at most `lock_timeout` seconds: counters are
    added, the timestamp gauge set."""
    directory, name = os.path.split(os.fspath(path))
    if not name or name in (".", "..") or name.startswith("."):
        raise MetricsError("the file name must not be empty or start with a dot")
    dir_fd = _open_trusted_directory(directory)
    try:
        lock_fd = _open_lock(f".{name}.lock", dir_fd)
        try:
            if not private_files.lock(lock_fd, min(lock_timeout, LOCK_TIMEOUT)):
                raise MetricsError(f"its lock was held by another run for {max(0.0, lock_timeout):.3g}s")
            series = parse(_read(name, dir_fd))
            for key, value in add.items():
                series[key] = series.get(key, 0.0) + value
            gauge = "ecr_kubelet_last_success_timestamp_seconds" if success else \
                "ecr_kubelet_last_failure_timestamp_seconds"
            series[(gauge, ())] = now
            # 0644: the collector may run as another user; the temp name does not end in .prom, so the
            # collector never reads half a file.
            private_files.write_file(dir_fd, name, render(series).encode(), mode=0o644,
                                     temp_prefix=f".{name}.", temp_suffix=".tmp")
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


def _open_lock(name: str, dir_fd: int) -> int:
    try:
        return private_files.open_lock(name, dir_fd=dir_fd)
    except private_files.UnusableFile as exc:
        raise MetricsError(f"refusing its lock {name}: {exc.reason}") from None


def _read(name: str, dir_fd: int) -> str:
    try:
        raw = private_files.read_file(name, _MAX_BYTES, dir_fd=dir_fd)
    except private_files.UnusableFile as exc:
        raise MetricsError(f"refusing it: {exc.reason}") from None
    return "" if raw is None else raw.decode("utf-8", "replace")


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
