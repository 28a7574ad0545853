"""One error handler for every subcommand (command.py): whatever goes wrong, a failing run prints exactly
one line and exits with the documented code; stdout that is closed, full or broken is one of those
failures, never a traceback."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecr_kubelet import command, logs
from ecr_kubelet.errors import AuthError, BadInputError
from helpers import RunProvider, StubClient, make_request

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
REQUEST = (json.dumps(make_request(f"{HOST}/app")) + "\n").encode()

# ---- the handler itself, as any mode (the Docker helper, with its stdout protocol) would use it -------


def run(body: Any, verbosity: int = 0) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = command.Command("prog", verbosity, report=lines.append).run(body)
    return code, lines


def test_a_provider_error_is_its_message_and_exit_code() -> None:
    def body() -> int:
        raise AuthError("no credentials\nat all")

    assert run(body) == (3, ["no credentials at all"])


@pytest.mark.parametrize(("exc", "fragment"), [
    (OSError(28, "No space left on device"), "OSError: No space left on device"),
    (RuntimeError("a bug"), "RuntimeError: a bug"),
    (KeyError("x"), "KeyError"),
])
def test_anything_else_is_one_internal_error_line(exc: Exception, fragment: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> int:
        raise exc

    code, lines = run(body)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("internal error: ") and fragment in lines[0]
    assert "Traceback" not in capsys.readouterr().err


def test_a_botocore_error_that_escaped_is_translated() -> None:
    import botocore.exceptions as bx

    def body() -> int:
        raise bx.ConfigParseError(path="/etc/aws/config")

    code, [line] = run(body)
    assert code == 2 and "invalid local AWS configuration" in line


def test_the_body_exit_code_is_kept_and_the_hook_sees_it() -> None:
    seen: list[int] = []
    handler = command.Command("prog", report=lambda line: None)
    handler.before_exit = seen.append
    assert handler.run(lambda: 5) == 5 and seen == [5]


@pytest.fixture
def holding() -> Iterator[None]:
    """Warnings held as a command without -v holds them; the test process's logging restored after."""
    root, ours = logging.getLogger(), logging.getLogger("ecr_kubelet")
    saved = root.handlers[:], root.level, ours.level
    logs.configure(0, hold=True)
    try:
        yield
    finally:
        logs.release_held()
        logs.configure(0)
        logs._pending.clear()
        root.handlers[:], _, _ = saved
        root.setLevel(saved[1])
        ours.setLevel(saved[2])


@pytest.mark.usefixtures("holding")
def test_warnings_before_a_failure_are_folded_into_its_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    log = logs.get("ecr_kubelet.test")

    def body() -> int:
        log.warning("cache directory %s refused", "/x")
        log.warning("second")
        raise BadInputError("bad")

    code, lines = run(body)
    assert code == 2 and lines == ["bad (after warnings: cache directory /x refused; second)"]
    assert capsys.readouterr().err == ""


@pytest.mark.usefixtures("holding")
def test_the_hook_may_warn_and_its_warning_is_folded_too() -> None:
    handler = command.Command("prog")
    lines: list[str] = []
    handler.report = lines.append
    handler.before_exit = lambda code: logs.get("ecr_kubelet.test").warning("metrics not updated")

    def body() -> int:
        raise BadInputError("bad")

    assert handler.run(body) == 2
    assert lines == ["bad (after warnings: metrics not updated)"]


@pytest.mark.parametrize(("argv", "level"), [
    ([], 0), (["-v"], 1), (["-vv"], 2), (["--verbose", "-v"], 2), (["--v=4"], 2), (["--v=2"], 1), (["--v=x"], 0),
])
def test_verbosity_is_known_before_the_arguments_are_parsed(argv: list[str], level: int) -> None:
    assert command.verbosity_in(argv) == level


# ---- every subcommand, run as the kubelet or a person runs it ------------------------------------------


def one_line(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == code, (result.returncode, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    return lines[0]


def spawn(cmd: list[str], env: dict[str, str], stdin: Any = None, stdout: Any = None,
          input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, env=env, stdin=stdin, stdout=stdout, input=input, stderr=subprocess.PIPE,
                          timeout=70, check=False)


SUBCOMMANDS = {
    "kubelet": [],
    "version": ["--version"],
    "help": ["--help"],
    "diagnose": ["diagnose", f"{HOST}/app"],
    "validate-config": ["validate-config", "/nonexistent/config.json"],
}


@pytest.mark.parametrize("mode", sorted(SUBCOMMANDS))
@pytest.mark.parametrize("stdout", ["closed", "full", "broken"])
def test_stdout_that_cannot_be_written_is_one_line_exit_1(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient, tmp_path: Path, mode: str,
    stdout: str,
) -> None:
    if (mode, stdout) == ("help", "closed"):
        pytest.skip("argparse prints --help on stderr when stdout is closed")
    cmd = [*provider_cmd, *SUBCOMMANDS[mode]]
    if stdout == "broken":
        read, write = os.pipe()
        os.close(read)  # nobody will ever read: every write is EPIPE
        try:
            result = spawn(cmd, provider_env, input=REQUEST, stdout=write)
        finally:
            os.close(write)
    elif stdout == "full":
        with open("/dev/full", "wb") as full:
            result = spawn(cmd, provider_env, input=REQUEST, stdout=full)
    else:
        script = "exec 1>&-; exec \"$@\""
        result = spawn(["sh", "-c", script, "sh", *cmd], provider_env, input=REQUEST)
    assert "stdout" in one_line(result, 1)


def test_warnings_then_a_failure_print_one_line_that_holds_them(
    run_provider: RunProvider, stub: StubClient, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # others may change it: the cache directory in it is refused, with a warning
    stub.configure(deny=True)
    args = ("--cache-dir", str(shared / "cache"), "--metrics-file", str(shared / "ecr.prom"))
    result = run_provider(make_request(f"{HOST}/app"), *args)
    assert result.returncode == 3 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("ecr-credential-provider: error: ecr:GetAuthorizationToken")
    assert "(after warnings: " in line and "metrics file" in line
    verbose = run_provider(make_request(f"{HOST}/app"), "-v", *args)
    assert verbose.returncode == 3 and len(verbose.stderr.splitlines()) > 1  # -v: every record, as it happens
    stub.configure(deny=False)
    ok = run_provider(make_request(f"{HOST}/app"), *args)  # a run that succeeds prints its warnings as they were
    assert ok.returncode == 0 and json.loads(ok.stdout)["auth"]
    assert ok.stderr and all(line.startswith("ecr-credential-provider: WARNING: ") for line in ok.stderr.splitlines())


@pytest.mark.parametrize(("env", "fragment"), [
    ({"AWS_CONFIG_FILE": "{tmp}/bad-config"}, "ConfigParseError"),
    ({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "not a url", "AWS_EC2_METADATA_DISABLED": "false"},
     "InvalidIMDSEndpointError"),
])
def test_a_malformed_local_aws_configuration_is_bad_input_not_internal(
    run_provider: RunProvider, provider_env: dict[str, str], stub: StubClient, tmp_path: Path,
    env: dict[str, str], fragment: str,
) -> None:
    (tmp_path / "bad-config").write_text("[profile x\nnot = [ini\n")
    base = {k: v for k, v in provider_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    result = run_provider(make_request(f"{HOST}/app"),
                          env={**base, **{k: v.format(tmp=tmp_path) for k, v in env.items()}})
    assert result.returncode == 2 and result.stdout == "", result.stderr
    [line] = result.stderr.splitlines()
    assert fragment in line and "internal error" not in line


def test_closed_stdin_is_bad_input(provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient) -> None:
    result = spawn(["sh", "-c", "exec 0<&-; exec \"$@\"", "sh", *provider_cmd], provider_env)
    assert "stdin" in one_line(result, 2)


# ---- the process's end (cli.run) ---------------------------------------------------------------------


def test_the_process_ends_at_once_with_its_output_all_out_and_its_exit_code(
        provider_env: dict[str, str], stub: StubClient) -> None:
    """cli.run ends the process when the command is done, without the interpreter's teardown (an atexit
    hook stands for it: it must not run), yet everything printed is out and the exit code is the
    command's: a whole answer on stdout, or one error line on stderr."""
    program = ("import atexit, sys\n"
               "atexit.register(lambda: sys.stderr.write('torn down\\n'))\n"
               "from ecr_kubelet.cli import run\n"
               "run()\n")

    def run_program(request: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-c", program], input=request, env=provider_env, capture_output=True,
                              timeout=60, check=False)

    answered = run_program(REQUEST)
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["auth"][HOST]["password"] and answered.stderr == b""
    refused = run_program(b"{not json")
    assert refused.returncode == 2 and refused.stdout == b""
    assert len(refused.stderr.splitlines()) == 1 and b"torn down" not in refused.stderr


def test_ending_the_process_flushes_what_is_still_buffered(tmp_path: Path) -> None:
    """command.end_process: stdout and stderr written without a flush, and a logging handler that holds
    its records until it is flushed or closed, are all out when the process ends, with the code given."""
    log_file = tmp_path / "log"
    program = ("import logging, logging.handlers, sys\n"
               f"target = logging.FileHandler({str(log_file)!r})\n"
               "logging.getLogger().addHandler(logging.handlers.MemoryHandler(100, target=target))\n"
               "logging.getLogger().warning('held by the handler')\n"
               "sys.stdout.write('on stdout'); sys.stderr.write('on stderr')\n"
               "from ecr_kubelet.command import end_process\n"
               "end_process(3)\n")
    ended = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60, check=False,
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": ""})
    assert (ended.returncode, ended.stdout, ended.stderr) == (3, b"on stdout", b"on stderr")
    assert log_file.read_text() == "held by the handler\n"
