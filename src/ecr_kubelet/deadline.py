"""A hard deadline for the whole run, well inside the kubelet's 60 s kill.

An exception raised from a signal handler is not enough: botocore treats anything raised while
sending as a retryable HTTP error. So when the alarm fires we finish the process from the handler:
with the still-valid cached answer when one was registered, else with one error line.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType

_fallback: Callable[[], object] | None = None


def set_fallback(produce: Callable[[], object] | None) -> None:
    """Register what to answer if the deadline passes (a still-valid cached token), or clear it."""
    global _fallback
    _fallback = produce


def fallback() -> Callable[[], object] | None:
    return _fallback


def arm(seconds: float, on_expiry: Callable[[], None]) -> None:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        on_expiry()

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def disarm() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    set_fallback(None)
