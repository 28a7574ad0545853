"""The run's deadline: one object, created at start-up and handed down to everything that waits.

The kubelet starts its 60 s clock when it starts the process, so the deadline counts from the
process's own start time (read from /proc), not from when our code begins to run. Whatever waits
(reading stdin, the cache lock, each AWS attempt and the pause between attempts) sizes itself with
`remaining()`, so the normal code path ends in time and can still answer from a cached token.

Standard library only, and small: the cache-hit path creates one.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import NoReturn

# Time kept back for answering once the last wait is over (encode, write, exit).
ANSWER_MARGIN = 0.5


class Deadline:
    """A point in time on a monotonic clock, with what to answer should a wait overrun it."""

    __slots__ = ("_armed", "_clock", "_end", "_sleep", "expire", "fallback", "timeout")

    def __init__(self, timeout: float, *, elapsed: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 expire: Callable[[Deadline], NoReturn] | None = None) -> None:
        self.timeout = timeout
        # What ends the run should something that cannot be timed out outlive the deadline (see
        # `backstop`); None: nothing does.
        self.expire = expire
        self._armed = 0
        self._clock = clock
        self._sleep = sleep
        self._end = clock() + timeout - max(0.0, elapsed)
        # A complete, still-valid answer (response bytes) to give if something that cannot be timed
        # out (a hung credential_process) outlives the deadline; set by the code that has one.
        self.fallback: bytes | None = None

    @classmethod
    def from_process_start(cls, timeout: float, expire: Callable[[Deadline], NoReturn] | None = None) -> Deadline:
        return cls(timeout, elapsed=min(process_age(), timeout), expire=expire)

    def remaining(self) -> float:
        """Seconds left for waiting, keeping ANSWER_MARGIN back to answer."""
        return self._end - ANSWER_MARGIN - self._clock()

    def backstop(self) -> Backstop:
        return Backstop(self)

    def sleep(self, seconds: float) -> None:
        """Pause, never past the deadline (injected in tests, with the clock)."""
        self._sleep(max(0.0, min(seconds, self.remaining())))


def process_age() -> float:
    """Seconds since this process started (Linux /proc; 0 where that cannot be read)."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            stat = handle.read()
        # Field 22, starttime, in clock ticks since boot; fields after the ")" closing the command name.
        start_ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0
    return age if 0.0 <= age < 3600.0 else 0.0


class Backstop:
    """`with deadline.backstop():` around work that may ignore the deadline: at the deadline, the
    deadline's `expire` (which must end the process) is called from SIGALRM.

    Every wait is sized from the deadline, so this fires only for what ignores it (a hung
    `credential_process`, which botocore runs without a timeout). `expire` must end the process
    itself (os._exit), because botocore takes an exception raised from here for a retryable HTTP
    error. Nested uses arm once. Only a run that goes to AWS needs it, so a cache hit never loads
    `signal` (which loads enum).
    """

    __slots__ = ("deadline",)

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def __enter__(self) -> Deadline:
        deadline = self.deadline
        deadline._armed += 1
        if deadline._armed == 1 and deadline.expire is not None:
            import signal

            expire = deadline.expire
            signal.signal(signal.SIGALRM, lambda _signum, _frame: expire(deadline))
            signal.setitimer(signal.ITIMER_REAL, max(0.001, deadline.remaining() + ANSWER_MARGIN))
        return deadline

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        deadline = self.deadline
        deadline._armed -= 1
        if deadline._armed == 0 and deadline.expire is not None:
            import signal

            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
