"""Messages on stderr, through the standard `logging` package, which is imported only when needed.

`import logging` costs about a quarter of a cache hit inside the binary (it pulls in threading,
traceback, string, weakref), and a hit without -v prints nothing. So every module logs through a
`Log` from `get(name)`: debug and info messages are passed on only when logging is loaded already
(it is with -v, on a cache miss, where botocore loads it, and under pytest), warnings always are.
`configure(verbosity)`, called once by a command, says how records are printed; until a record is
printed, nothing is set up. Library use without `configure` (the tests) leaves logging as it is.

Without -v, a command that ends through command.py holds warnings rather than printing them, so that a
failing run prints exactly one line: they are folded into its error line, or printed as they were when the
run succeeds.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

PROG = "ecr-credential-provider"
HELPER_PROG = "docker-credential-ecr-login"  # invoked under this name, we speak Docker's credential-helper protocol
DEBUG, INFO, WARNING = 10, 20, 30

# The command's settings (verbosity, name, extra handler), once `configure` was called and until
# logging is set up for them.
_pending: list[tuple[int, str, Callable[[], logging.Handler | None] | None]] = []
# Without -v: the warnings logged so far, scrubbed, until the command prints them or folds them.
_held: list[tuple[str, str]] = []  # (level name, message)
_holding: list[bool] = []


class Log:
    """A named logger that costs nothing until a record is printed."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, message: str, *args: object) -> None:
        if "logging" in sys.modules:
            self._emit(DEBUG, message, args)

    def info(self, message: str, *args: object) -> None:
        if "logging" in sys.modules:
            self._emit(INFO, message, args)

    def warning(self, message: str, *args: object) -> None:
        self._emit(WARNING, message, args)

    def exception(self, message: str) -> None:
        """An error with its traceback (only with -v: the one-line error is printed anyway)."""
        import logging

        set_up()
        logging.getLogger(self.name).exception(message)

    def _emit(self, level: int, message: str, args: tuple[object, ...]) -> None:
        import logging

        set_up()
        logging.getLogger(self.name).log(level, message, *args)


def get(name: str) -> Log:
    return Log(name)


def configure(verbosity: int, *, hold: bool = False, prog: str = PROG,
              extra_handler: Callable[[], logging.Handler | None] | None = None) -> None:
    """How this command prints: -v info, -vv debug, else warnings only (`hold`: held until the command
    ends, for a command that ends through command.py); with -v, set up now.

    `prog` starts every line (the Docker helper's own name in that mode); `extra_handler` makes one
    more destination for the same records (the Docker helper's log file), called only when a record
    is first printed, so a run that prints nothing opens nothing."""
    _pending[:] = [(verbosity, prog, extra_handler)]
    _holding[:] = [hold and verbosity <= 0]
    if verbosity > 0:
        set_up()


def take_held() -> list[str]:
    """The warnings held so far (each one line), no longer held."""
    taken = [message for _, message in _held]
    _held.clear()
    return taken


def release_held() -> None:
    """Print the held warnings as they would have been printed; later ones are printed at once."""
    _holding[:] = [False]
    held = list(_held)
    _held.clear()
    for level, message in held:
        try:
            sys.stderr.write(f"{PROG}: {level}: {message}\n")
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            return


def set_up() -> None:
    """Install the stderr handler for the configured verbosity, once; also called before botocore
    is loaded, so that its own records are filtered the same way."""
    if not _pending:
        return
    verbosity, prog, extra_handler = _pending.pop()
    import logging

    class Handler(logging.StreamHandler):  # type: ignore[type-arg]
        """stderr, or the held list while the command holds warnings."""

        def emit(self, record: logging.LogRecord) -> None:
            if _holding and _holding[0]:
                _held.append((record.levelname, " ".join(record.getMessage().split())))  # scrubbed already
            else:
                super().emit(record)

    handler = Handler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(levelname)s: %(message)s"))
    handlers: list[logging.Handler] = [handler]
    extra = extra_handler() if extra_handler is not None else None
    if extra is not None:
        handlers.append(extra)
    for each in handlers:
        each.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.WARNING)
    logging.getLogger("ecr_kubelet").setLevel(
        logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING
    )
    # botocore's own debug output includes request bodies and signed headers: never raise it.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def when(epoch: float | None) -> str:
    """A point in time for messages: ISO 8601 UTC."""
    import time

    if epoch is None:
        return "an unknown time"
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    except (OverflowError, ValueError, OSError):
        return f"{epoch:.6g} (epoch seconds)"


class RedactingFilter:
    """Rewrites each record's final message with every registered secret masked (redact.py).

    A plain object with a `filter` method, which logging accepts as a filter, so that defining it
    does not import logging."""

    def filter(self, record: logging.LogRecord) -> bool:
        import logging

        from ecr_kubelet.redact import scrub

        message = record.getMessage()
        if record.exc_info:
            message = message + "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = scrub(message)
        record.args = None
        return True
