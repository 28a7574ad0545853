"""Go `time.Duration` strings, as the kubelet parses and prints them.

The kubelet reads `cacheDuration` and `defaultCacheDuration` with Go's `time.ParseDuration`, so we both
emit (format) and validate (parse) exactly that grammar: no `d` unit, no bare numbers, no empty string.
"""

from __future__ import annotations

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# A number and its unit; ASCII digits only, as Go (compiled on first parse: a cache hit parses none).
_NUMBER = r"(\d+\.?\d*|\.\d+)"
_COMPONENT = _NUMBER + r"(ns|us|\u00b5s|\u03bcs|ms|s|m|h)"
# Go rejects durations whose nanosecond count overflows int64 (about 2562047h).
_MAX_SECONDS = (2**63 - 1) / 1e9


class DurationError(ValueError):
    """A string that Go's time.ParseDuration would reject."""


def parse_go_duration(text: str) -> float:
    """Return the duration in seconds, or raise DurationError where Go would fail."""
    if not isinstance(text, str):
        raise DurationError(f"duration must be a string, not {type(text).__name__}")
    body = text
    sign = 1.0
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise DurationError(f"invalid duration {text!r}")
    import re

    component = re.compile(_COMPONENT, re.ASCII)
    total = 0.0
    pos = 0
    while pos < len(body):
        match = component.match(body, pos)
        if match is None:
            if re.match(_NUMBER, body[pos:], re.ASCII):
                raise DurationError(f"missing or unknown unit in duration {text!r}")
            raise DurationError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if total > _MAX_SECONDS:
        raise DurationError(f"duration {text!r} overflows")
    return sign * total


def format_go_duration(seconds: float) -> str:
    """Format whole seconds the way Go's Duration.String does (`6h0m0s`, `1m30s`, `45s`, `0s`)."""
    whole = int(seconds)
    if whole <= 0:
        return "0s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
