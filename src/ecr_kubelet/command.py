"""How every subcommand ends: one error handler (as pip's base command has one) for the kubelet mode,
`diagnose` and `validate-config`, built so that the Docker helper can use it too.

A subcommand's body runs inside `Command.run`, the one place that turns what went wrong into one
redacted line and the documented exit code (errors.py; the README's table):

* a ProviderError: its message and exit code;
* stdout that is closed, full or whose reader went away: "cannot write to stdout", exit 1 (the answer
  was lost), and never the interpreter's own complaint at exit;
* any other OSError or exception, and a botocore exception that escaped its translation: exit 1
  ("internal error", with its type), or what awsapi.translate_error makes of a botocore one (a
  malformed local AWS configuration is bad input, exit 2).

The traceback is printed only when verbose. Without -v a failing run prints exactly one line: warnings
logged before the failure are held (logs.configure) and folded into that line, so the kubelet, which logs
a plugin's stderr only when it fails, still shows them; a run that succeeds prints them as they were.
With -v every record is printed as it happens, and the error line follows.

The error line goes to stderr, prefixed with the program's name; a mode with another protocol (the
Docker helper writes its errors on stdout) passes its own `report`.
"""

from __future__ import annotations

import os
import sys

from ecr_kubelet import logs, redact
from ecr_kubelet.errors import EXIT_INTERNAL, ProviderError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from ecr_kubelet.observe import Observer
    from ecr_kubelet.options import Options

_MAX_FOLDED = 600  # characters of held warnings folded into the error line


class StdoutError(ProviderError):
    """Our answer could not be written: stdout is closed, full or its reader went away."""


class Command:
    """One run of a subcommand: its name for the error line, its verbosity and where errors go.

    `verbosity` starts from a scan of the arguments (so a failure while parsing them still gets its
    traceback at -v) and is set from the parsed options by the body. `before_exit` runs once, with the
    exit code, before the error line is printed (the metrics file, whose warnings are then folded too)."""

    __slots__ = ("before_exit", "prog", "report", "verbosity")

    def __init__(self, prog: str, verbosity: int = 0, report: Callable[[str], None] | None = None) -> None:
        self.prog = prog
        self.verbosity = verbosity
        self.report = report if report is not None else self._to_stderr
        self.before_exit: Callable[[int], None] | None = None

    def run(self, body: Callable[[], int]) -> int:
        """Run the body and end the command: its exit code, or the failure's after one line."""
        try:
            try:
                code = body()
            except SystemExit as exc:  # argparse's --help: its text is flushed (or fails) like any output
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            flush_stdout()
        except ProviderError as exc:
            return self.fail(str(exc), exc.exit_code)
        except Exception as exc:  # an OSError, a bug, or a botocore error that escaped its translation
            if self.verbosity:
                logs.configure(self.verbosity)  # perhaps not yet: the traceback goes through the redacting filter
                logs.get("ecr_kubelet").exception("internal error")
            return self.fail(*describe(exc))
        self._finish(code)
        logs.release_held()  # the run did not fail here: its warnings are printed as they were
        return code

    def fail(self, message: str, code: int) -> int:
        """Print the one error line (with the warnings held so far folded in) and return `code`."""
        self._finish(code)
        held = logs.take_held()
        if held:
            folded = "; ".join(held)
            if len(folded) > _MAX_FOLDED:
                folded = folded[: _MAX_FOLDED - 3] + "..."
            message = f"{message} (after warnings: {folded})"
        self.report(" ".join(redact.scrub(message).split()))  # one line, whatever the message held
        return code

    def _finish(self, code: int) -> None:
        hook, self.before_exit = self.before_exit, None
        if hook is not None:
            try:
                hook(code)
            except Exception as exc:  # the hook (metrics) must not turn one failure into another
                logs.get("ecr_kubelet").warning("%s", describe(exc)[0])

    def _to_stderr(self, line: str) -> None:
        try:
            sys.stderr.write(f"{self.prog}: error: {line}\n")
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass  # stderr is closed or full too: the exit code is all that is left


def end_process(code: int) -> NoReturn:
    """End the process now, without the interpreter's teardown (cli.run, after every subcommand).

    A run answers one request and exits; tearing down frees every module and runs a last garbage
    collection over botocore's objects (about 5 ms of a cache hit and 90 ms of a miss) for nothing the
    kernel does not do at exit, while the kubelet or a registry client waits for the exit. What must
    outlive the run is out already or here: cache entries are fsynced and renamed, locks go with the
    process, stdout and stderr are flushed, and so are logging's handlers (-v, the Docker helper's log
    file). No thread or atexit hook of ours or of botocore's is left to wait for.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass  # the command reported an unwritable stdout already; stderr has no one to tell
    if "logging" in sys.modules:
        import logging

        logging.shutdown()
    os._exit(code)


def describe(exc: BaseException) -> tuple[str, int]:
    """(message, exit code) for an exception that is not a ProviderError."""
    if type(exc).__module__.startswith("botocore"):  # botocore is loaded already: nothing new imported
        from ecr_kubelet.awsapi import translate_error

        error = translate_error(exc, "AWS configuration")  # type: ignore[arg-type]
        return str(error), error.exit_code
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"internal error: {type(exc).__name__}: {exc.strerror or exc}{where}", EXIT_INTERNAL
    return f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL


def write_stdout(data: bytes) -> None:
    """Write our answer and flush it; StdoutError if it cannot be written whole."""
    stream = sys.stdout
    if stream is None:  # started with stdout closed
        raise StdoutError("cannot write the answer: stdout is closed")
    try:
        stream.flush()
        stream.buffer.write(data)
        stream.buffer.flush()
    except (OSError, ValueError) as exc:
        raise _lost(exc) from None


def flush_stdout() -> None:
    """Flush what the body printed (--version, a report); StdoutError if it cannot be written."""
    stream = sys.stdout
    if stream is None or stream.closed:
        return
    try:
        stream.flush()
    except (OSError, ValueError) as exc:
        raise _lost(exc) from None


def _lost(exc: Exception) -> StdoutError:
    # What is still buffered must not fail again at exit (the interpreter's "Exception ignored" lines):
    # point stdout at /dev/null, as the Python documentation advises for a broken pipe.
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return StdoutError(f"cannot write to stdout: {reason}")


def verbosity_in(argv: list[str]) -> int:
    """-v / -vv / --verbose / --v=N as written, before the arguments are parsed."""
    level = 0
    for arg in argv:
        if arg in ("-v", "--verbose"):
            level += 1
        elif arg.startswith("-vv"):
            level += len(arg) - 1
        elif arg.startswith("--v="):
            text = arg[4:]
            level = max(level, 2 if text.isdigit() and int(text) >= 4 else 1 if text.isdigit() and int(text) >= 2
                        else 0)
    return level


def record_metrics(options: Options | None, observer: Observer, mode: str, exit_code: int) -> None:
    """Count this run in the metrics file, if one is configured, once its answer is out (Command's
    before_exit, the deadline fallbacks). Never fails (metrics.record warns), and never waits for the
    file's lock past the run's own deadline: the kubelet's kill must not find us counting."""
    if options is not None and options.metrics_file is not None:
        from ecr_kubelet import metrics
        from ecr_kubelet.deadline import Deadline

        remaining = max(0.0, Deadline.from_process_start(options.timeout).remaining())
        metrics.record(options.metrics_file, observer, mode, exit_code, lock_timeout=remaining)
