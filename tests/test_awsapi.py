"""Endpoint selection and error translation, using botocore's own endpoint rules (no network)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from ecr_kubelet.awsapi import (
    CONNECT_TIMEOUT,
    MIN_ATTEMPT_SECONDS,
    READ_TIMEOUT,
    THROTTLE_MAX_BACKOFF,
    call_with_retries,
    client_config,
    new_session,
    translate_error,
)
from ecr_kubelet.deadline import Deadline
from ecr_kubelet.errors import AuthError, BadInputError, ProviderError, UnavailableError
from ecr_kubelet.registry import classify_host

ACCT = "123456789012"


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL_ECR_PUBLIC", "AWS_ENDPOINT_URL_STS",
                 "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")


def endpoint(host: str, service: str | None = None) -> str:
    registry = classify_host(host)
    assert registry is not None
    name = service or registry.service
    client = new_session().create_client(
        name, region_name=registry.region, config=client_config(name, registry),
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="not-a-secret",
    )
    return str(client.meta.endpoint_url)


@pytest.mark.parametrize(
    ("host", "ecr", "sts"),
    [
        (f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com", "https://api.ecr.us-east-1.amazonaws.com",
         "https://sts.us-east-1.amazonaws.com"),
        (f"{ACCT}.dkr.ecr-fips.us-east-1.amazonaws.com", "https://ecr-fips.us-east-1.amazonaws.com",
         "https://sts-fips.us-east-1.amazonaws.com"),
        (f"{ACCT}.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "https://ecr-fips.us-gov-west-1.amazonaws.com",
         "https://sts.us-gov-west-1.amazonaws.com"),
        (f"{ACCT}.dkr-ecr.eu-west-1.on.aws", "https://ecr.eu-west-1.api.aws", "https://sts.eu-west-1.api.aws"),
        (f"{ACCT}.dkr-ecr-fips.us-gov-west-1.on.aws", "https://ecr-fips.us-gov-west-1.api.aws",
         "https://sts-fips.us-gov-west-1.api.aws"),
        (f"{ACCT}.dkr.ecr.cn-north-1.amazonaws.com.cn", "https://api.ecr.cn-north-1.amazonaws.com.cn",
         "https://sts.cn-north-1.amazonaws.com.cn"),
        (f"{ACCT}.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn",
         "https://ecr.cn-north-1.api.amazonwebservices.com.cn",
         "https://sts.cn-north-1.api.amazonwebservices.com.cn"),
        (f"{ACCT}.dkr.ecr.us-iso-east-1.c2s.ic.gov", "https://api.ecr.us-iso-east-1.c2s.ic.gov",
         "https://sts.us-iso-east-1.c2s.ic.gov"),
        (f"{ACCT}.dkr.ecr.eusc-de-east-1.amazonaws.eu", "https://api.ecr.eusc-de-east-1.amazonaws.eu",
         "https://sts.eusc-de-east-1.amazonaws.eu"),
        ("public.ecr.aws", "https://api.ecr-public.us-east-1.amazonaws.com", "https://sts.us-east-1.amazonaws.com"),
        ("ecr-public.aws.com", "https://ecr-public.us-east-1.api.aws", "https://sts.us-east-1.api.aws"),
    ],
)
def test_api_endpoint_follows_the_registry_host(host: str, ecr: str, sts: str) -> None:
    assert endpoint(host) == ecr
    assert endpoint(host, "sts") == sts


def test_an_endpoint_override_wins_over_fips_and_dualstack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", "http://127.0.0.1:9")
    assert endpoint(f"{ACCT}.dkr-ecr-fips.us-west-2.on.aws") == "http://127.0.0.1:9"
    registry = classify_host(f"{ACCT}.dkr-ecr-fips.us-west-2.on.aws")
    assert registry is not None
    config: Any = client_config("ecr", registry)
    assert not config.use_fips_endpoint and not config.use_dualstack_endpoint


def client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "GetAuthorizationToken")


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def fake_deadline(seconds: float) -> tuple[Deadline, FakeClock]:
    clock = FakeClock()
    return Deadline(seconds, clock=clock, sleep=clock.sleep), clock


def test_each_attempt_is_one_botocore_attempt_with_timeouts_from_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "9")  # our loop retries; botocore's setting must not leak in
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    registry = classify_host(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com")
    assert registry is not None
    roomy: Any = client_config("ecr", registry, deadline=fake_deadline(55)[0])
    assert (roomy.connect_timeout, roomy.read_timeout) == (CONNECT_TIMEOUT, READ_TIMEOUT)
    assert getattr(roomy, "retries") == {"mode": "standard", "total_max_attempts": 1}
    deadline, clock = fake_deadline(55)
    clock.now += 55 - 0.5 - 2.0  # 2 s left before the answer margin
    tight: Any = client_config("ecr", registry, deadline=deadline)
    assert (tight.connect_timeout, tight.read_timeout) == (2.0, 2.0)


def throttled() -> ClientError:
    return client_error("ThrottlingException", 400)


class Attempts:
    """One AWS attempt per call: raises the scripted errors in turn, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, _deadline: Deadline) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_throttling_is_retried_until_the_deadline_with_jittered_pauses() -> None:
    deadline, clock = fake_deadline(55)
    attempts = Attempts(*[throttled() for _ in range(10_000)])
    with pytest.raises(UnavailableError, match=r"ThrottlingException.*attempts until the deadline"):
        call_with_retries(attempts, "ecr:GetAuthorizationToken", deadline, max_attempts=3, rng=lambda: 0.5)
    # it kept trying for the whole window, a last attempt just before its end, never longer
    assert attempts.calls > 10
    assert 55 - 0.5 - 2 * MIN_ATTEMPT_SECONDS <= clock.now - 1000.0 <= 55 - 0.5
    assert max(clock.sleeps) <= THROTTLE_MAX_BACKOFF / 2  # rand 0.5 of the cap
    assert clock.sleeps[:4] == [0.5, 1.0, 2.0, 4.0]  # botocore's throttling backoff: 1 s * 2^i * rand


def test_with_a_cached_token_to_fall_back_on_throttling_is_not_waited_out() -> None:
    deadline, clock = fake_deadline(55)
    attempts = Attempts(*[throttled() for _ in range(100)])
    with pytest.raises(UnavailableError, match=r"ThrottlingException.*3 attempts"):
        call_with_retries(attempts, "x", deadline, max_attempts=3, rng=lambda: 1.0, patient=False)
    assert attempts.calls == 3 and clock.now - 1000.0 < 5


def test_throttling_then_success_returns_the_answer() -> None:
    deadline, _clock = fake_deadline(55)
    attempts = Attempts(throttled(), throttled(), client_error("ServiceUnavailableException", 503))
    assert call_with_retries(attempts, "x", deadline, max_attempts=3, rng=lambda: 1.0) == "ok"
    assert attempts.calls == 4


def test_other_retryable_failures_are_few_and_fast() -> None:
    deadline, clock = fake_deadline(55)
    attempts = Attempts(*[client_error("ServerException", 500) for _ in range(10)])
    with pytest.raises(UnavailableError, match=r"ServerException.*3 attempts \(AWS_MAX_ATTEMPTS\)"):
        call_with_retries(attempts, "x", deadline, max_attempts=3, rng=lambda: 1.0)
    assert attempts.calls == 3 and clock.now - 1000.0 < 1.0


def test_a_timeout_at_the_deadline_says_aws_did_not_answer_in_time() -> None:
    deadline, clock = fake_deadline(5)

    def hangs(_deadline: Deadline) -> str:
        clock.now += 4.4  # the read timeout, sized to what was left
        raise ReadTimeoutError(endpoint_url="http://127.0.0.1:9")

    with pytest.raises(UnavailableError, match="AWS did not answer in time"):
        call_with_retries(hangs, "x", deadline, max_attempts=3)
    assert clock.now - 1000.0 <= 5


@pytest.mark.parametrize("error", [client_error("AccessDeniedException", 400),
                                   client_error("InvalidParameterException", 400), RuntimeError("boom")])
def test_failures_that_are_not_retryable_fail_at_once(error: Exception) -> None:
    deadline, clock = fake_deadline(55)
    attempts = Attempts(error)
    with pytest.raises(ProviderError):
        call_with_retries(attempts, "x", deadline, max_attempts=3)
    assert attempts.calls == 1 and clock.sleeps == []


def test_no_attempt_is_started_once_the_deadline_has_passed() -> None:
    deadline, clock = fake_deadline(1)
    clock.now += 1
    attempts = Attempts()
    with pytest.raises(UnavailableError, match="no time left"):
        call_with_retries(attempts, "x", deadline, max_attempts=3)
    assert attempts.calls == 0


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error("AccessDeniedException", 400), AuthError),
        (client_error("UnrecognizedClientException", 400), AuthError),
        (client_error("InvalidIdentityToken", 400), AuthError),
        (client_error("ExpiredTokenException", 400), AuthError),
        (client_error("Whatever", 403), AuthError),
        (client_error("ThrottlingException", 400), UnavailableError),
        (client_error("ServerException", 500), UnavailableError),
        (client_error("ServiceUnavailableException", 503), UnavailableError),
        (client_error("InvalidParameterException", 400), ProviderError),
        (NoCredentialsError(), AuthError),
        (EndpointConnectionError(endpoint_url="https://x"), UnavailableError),
        (RuntimeError("boom"), ProviderError),
        (CredentialRetrievalError(provider="custom-process", error_msg="line one\nline two\n"), AuthError),
        (ParamValidationError(report="Invalid length for parameter X\nand more"), BadInputError),
        (client_error("Weird\nCode", 400), ProviderError),
    ],
)
def test_error_translation(exc: Exception, kind: type[ProviderError]) -> None:
    translated = translate_error(exc, "ecr:GetAuthorizationToken")
    assert type(translated) is kind
    assert str(translated).startswith("ecr:GetAuthorizationToken")
    assert "\n" not in str(translated)
