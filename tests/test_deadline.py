"""The run's deadline object (src/ecr_kubelet/deadline.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import NoReturn

import pytest

from ecr_kubelet.deadline import ANSWER_MARGIN, Deadline, process_age
from helpers import StubClient, binary_is_emulated, make_request


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_remaining_keeps_the_answer_margin_and_counts_what_already_elapsed() -> None:
    clock = Clock()
    deadline = Deadline(10, elapsed=3, clock=clock, sleep=clock.sleep)
    assert deadline.remaining() == 10 - 3 - ANSWER_MARGIN
    clock.now += 6.5
    assert deadline.remaining() == 0


def test_sleep_never_passes_the_deadline() -> None:
    clock = Clock()
    deadline = Deadline(5, clock=clock, sleep=clock.sleep)
    deadline.sleep(60)
    assert clock.now == 50.0 + 5 - ANSWER_MARGIN


def test_process_age_is_this_process_age() -> None:
    # A child reports its own age right after starting: small, and not the parent's.
    code = "from ecr_kubelet.deadline import process_age; print(process_age())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0 < age < process_age()


@pytest.mark.e2e
def test_the_timeout_counts_from_process_start_not_from_when_our_code_runs(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient
) -> None:
    # The shell execs the provider (same process) after spending longer than --timeout itself.
    if binary_is_emulated():
        pytest.skip("under qemu-user the process start time is qemu's own, after the exec")
    script = 'sleep 2.5; exec "$@"'
    proc = subprocess.run(["/bin/sh", "-c", script, "sh", *provider_cmd, "--timeout", "2s"],
                          input=json.dumps(make_request("123456789012.dkr.ecr.us-east-1.amazonaws.com/app")).encode(),
                          env=provider_env, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == b"" and b"gave up after 2s" in proc.stderr
    assert stub.calls() == []
    assert os.path.exists("/proc/self/stat")  # the start time comes from /proc


def test_the_backstop_is_armed_only_inside_and_once_when_nested() -> None:
    import signal

    def expire(_deadline: Deadline) -> NoReturn:
        raise AssertionError("not reached: the alarm is far away")

    deadline = Deadline(30.0, expire=expire)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with deadline.backstop():
        first = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 29.0 < first <= 30.0 and signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None)
        with deadline.backstop():
            assert signal.getitimer(signal.ITIMER_REAL)[0] <= first  # not re-armed later
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # still armed after the inner one
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL


def test_a_deadline_without_an_expiry_action_never_arms_an_alarm() -> None:
    import signal

    with Deadline(30.0).backstop():
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
