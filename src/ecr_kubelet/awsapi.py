"""botocore plumbing shared by the identity and token modules: clients and error translation.

Imported only when a request actually needs AWS, so cache hits never pay for botocore.
"""

from __future__ import annotations

# First, before anything that compiles a pattern or imports botocore: the binary's compiled
# patterns and the stand-ins botocore's imports must find.
from ecr_kubelet import compiled_re, stand_ins  # noqa: F401

# isort: split
import logging
import math
import os
import random
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import botocore.session
from botocore import UNSIGNED
from botocore import exceptions as bx
from botocore.config import Config
from botocore.retries.standard import (
    ExponentialBackoff,
    RetryContext,
    RetryEventAdapter,
    ThrottledRetryableChecker,
    ThrottlingErrorDetector,
    TransientRetryableChecker,
)

from ecr_kubelet import __version__, redact
from ecr_kubelet.aws_errors import classify
from ecr_kubelet.deadline import Deadline
from ecr_kubelet.errors import AuthError, BadInputError, ProviderError, UnavailableError
from ecr_kubelet.options import configured_endpoints
from ecr_kubelet.registry import Registry

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 10.0
# Attempts for failures other than throttling (5xx, timeouts, unreachable): few, so they stay fast.
DEFAULT_MAX_ATTEMPTS = 3
# Throttled calls are retried until the deadline, each pause drawn at random from [0, cap]: a fleet
# booting at once then spreads its calls over the whole kubelet window instead of failing together
# and sitting out the kubelet's back-off while the quota refills unused.
THROTTLE_MAX_BACKOFF = 8
MIN_ATTEMPT_SECONDS = 0.2  # no attempt is started with less time than this left

_CREDENTIAL_ERRORS: tuple[type[Exception], ...] = (
    bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError,
    bx.TokenRetrievalError, bx.SSOError, bx.UnauthorizedSSOTokenError, bx.InvalidConfigError,
    bx.ProfileNotFound,
)
# A malformed local setting (a config file that does not parse, a metadata endpoint that is not a URL): bad
# input, exit 2, not an internal error; fixed on the node, not in AWS.
_LOCAL_CONFIG_ERRORS: tuple[type[Exception], ...] = (
    bx.ConfigParseError, bx.ConfigNotFound, bx.InvalidIMDSEndpointError, bx.InvalidIMDSEndpointModeError,
    bx.InvalidRegionError, bx.InvalidSTSRegionalEndpointsConfigError, bx.InvalidEndpointConfigurationError,
    bx.InvalidProxiesConfigError, bx.InvalidRetryConfigurationError,
)
_NETWORK_ERRORS: tuple[type[Exception], ...] = (
    bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
    bx.ConnectionClosedError, bx.ProxyConnectionError, bx.HTTPClientError,
)

def new_session() -> botocore.session.Session:
    session = botocore.session.Session()
    session.user_agent_extra = f"ecr-kubelet/{__version__}"
    if not os.environ.get("AWS_STS_REGIONAL_ENDPOINTS"):
        # Assume roles next to the registry, not in us-east-1 (botocore's historic default).
        session.set_config_variable("sts_regional_endpoints", "regional")
    return session


def client_config(service: str, registry: Registry, *, unsigned: bool = False,
                  deadline: Deadline | None = None) -> Config:
    """One attempt's timeouts (never past the deadline) and the endpoint variant of the registry host.

    botocore makes exactly one attempt per call: `call_with_retries` retries, because botocore's own
    retry loop can neither stop at a deadline nor shorten its timeouts as the deadline nears.
    """
    # Whole half-seconds, so that attempts far from the deadline share one client (see ClientPool).
    left = READ_TIMEOUT if deadline is None else max(MIN_ATTEMPT_SECONDS, math.floor(deadline.remaining() * 2) / 2)
    kwargs: dict[str, Any] = {
        "connect_timeout": min(CONNECT_TIMEOUT, left),
        "read_timeout": min(READ_TIMEOUT, left),
        "retries": {"mode": "standard", "total_max_attempts": 1},
    }
    # botocore refuses FIPS/dual-stack together with a custom endpoint; the override wins. botocore reads
    # the variables itself, so we ask them as it does (the request path has them in Options.endpoints).
    if service not in configured_endpoints(os.environ):
        if registry.fips:
            kwargs["use_fips_endpoint"] = True
        if registry.dualstack:
            kwargs["use_dualstack_endpoint"] = True
    if unsigned:
        kwargs["signature_version"] = UNSIGNED
    return Config(**kwargs)


_THROTTLED = ThrottledRetryableChecker()
_TRANSIENT = TransientRetryableChecker()


def retry_kind(exc: Exception) -> str | None:
    """"throttled", "transient" (5xx, timeouts, unreachable) or None (do not retry), per botocore."""
    context = _retry_context(exc, attempt=1)
    if context is None:
        return None
    status = context.http_response.status_code if context.http_response is not None else 0
    if _THROTTLED.is_retryable(context) or status == 429:
        return "throttled"
    return "transient" if _TRANSIENT.is_retryable(context) else None


def _retry_context(exc: Exception, attempt: int) -> RetryContext | None:
    if isinstance(exc, bx.ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        http = SimpleNamespace(status_code=status, headers=exc.response.get("ResponseMetadata", {})
                               .get("HTTPHeaders", {}))
        return RetryContext(attempt, parsed_response=exc.response, http_response=http)
    if isinstance(exc, bx.HTTPClientError | bx.ConnectionError):
        return RetryContext(attempt, caught_exception=exc)
    return None


class _Throttled(ThrottlingErrorDetector):
    """Picks botocore's throttling backoff scale; only used for errors already known as throttling."""

    def __init__(self) -> None:
        super().__init__(RetryEventAdapter())

    def is_throttling_error_from_context(self, context: RetryContext) -> bool:
        return True


def call_with_retries(call: Callable[[Deadline], T], action: str, deadline: Deadline, max_attempts: int,
                      rng: Callable[[], float] = random.random, *, patient: bool = True) -> T:
    """Run `call` (one AWS attempt, its timeouts sized from the deadline) until it succeeds.

    Throttled attempts are retried until the deadline (unless not `patient`: the run has a
    still-valid cached token to answer with, so throttling counts like any other failure); other
    retryable failures at most `max_attempts` times in all; anything else fails at once. Pauses are
    botocore's jittered exponential backoff.
    """
    throttle_backoff = ExponentialBackoff(max_backoff=THROTTLE_MAX_BACKOFF, random=rng,
                                          throttling_detector=_Throttled())
    other_backoff = ExponentialBackoff(random=rng)
    attempt = other_failures = 0
    while True:
        attempt += 1
        if deadline.remaining() < MIN_ATTEMPT_SECONDS:
            raise UnavailableError(f"gave up after {deadline.timeout:g}s: no time left to call AWS ({action}; "
                                   "--timeout counts from process start)")
        try:
            return call(deadline)
        except Exception as exc:
            kind = retry_kind(exc)
            if kind is None:
                raise translate_error(exc, action) from None
            if kind == "transient" or not patient:
                other_failures += 1
            context = _retry_context(exc, attempt)
            assert context is not None
            delay = (throttle_backoff if kind == "throttled" else other_backoff).delay_amount(context)
            if (kind == "transient" or not patient) and other_failures >= max_attempts:
                raise _gave_up(exc, action, attempt, deadline, "attempts") from None
            if deadline.remaining() < 2 * MIN_ATTEMPT_SECONDS:
                raise _gave_up(exc, action, attempt, deadline, "deadline") from None
            # A pause that would outlast the deadline is cut short: one last attempt beats none.
            delay = min(delay, deadline.remaining() - MIN_ATTEMPT_SECONDS)
            log.debug("%s: attempt %d %s; retrying in %.2fs", action, attempt, kind, delay)
            deadline.sleep(delay)


def _gave_up(exc: Exception, action: str, attempts: int, deadline: Deadline, why: str) -> ProviderError:
    if why == "deadline" and isinstance(exc, bx.ReadTimeoutError | bx.ConnectTimeoutError):
        return UnavailableError(
            f"gave up after {deadline.timeout:g}s: AWS did not answer in time (--timeout; {action}, "
            f"{attempts} attempt{'s' if attempts > 1 else ''})"
        )
    error = translate_error(exc, action)
    limit = "until the deadline (--timeout)" if why == "deadline" else "(AWS_MAX_ATTEMPTS)"
    return type(error)(f"{error} [{attempts} attempt{'s' if attempts > 1 else ''} {limit}]")


class ClientPool:
    """botocore clients by their timeouts: a run retrying throttled calls for a minute builds a new
    client (tens of milliseconds of CPU, on every node of a booting fleet) only when the deadline
    shortens the timeouts, not for every attempt."""

    def __init__(self, create: Callable[[Config], Any]) -> None:
        self._create = create
        self._clients: dict[tuple[float, float], Any] = {}

    def get(self, config: Config) -> Any:
        key = (float(getattr(config, "connect_timeout")), float(getattr(config, "read_timeout")))  # noqa: B009
        if key not in self._clients:
            self._clients[key] = self._create(config)
        return self._clients[key]


def translate_error(exc: Exception, action: str) -> ProviderError:
    """Map a botocore failure to our error classes, with a one-line message free of secrets."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = f"{action} failed: {first_line(code, 80)}: {first_line(str(error.get('Message', '')))}".rstrip(": ")
        result = classify(status or None, code)
        if result in ("throttled", "server_error"):
            return UnavailableError(message)
        if result == "denied":
            return AuthError(message)
        return ProviderError(message)
    if isinstance(exc, bx.CredentialRetrievalError):
        # Its message embeds whatever the source printed (a credential_process's whole stderr).
        provider = getattr(exc, "kwargs", {}).get("provider", "credential provider")
        detail = first_line(str(getattr(exc, "kwargs", {}).get("error_msg", "")))
        return AuthError(f"{action}: no usable AWS credentials: {provider} failed" + (f": {detail}" if detail else ""))
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return AuthError(f"{action}: no usable AWS credentials ({type(exc).__name__}: {first_line(str(exc))})")
    if isinstance(exc, _LOCAL_CONFIG_ERRORS):
        detail = f"{type(exc).__name__}: {first_line(str(exc))}"
        return BadInputError(f"{action}: invalid local AWS configuration ({detail})")
    if isinstance(exc, _NETWORK_ERRORS):
        return UnavailableError(f"{action}: AWS unreachable ({type(exc).__name__}: {first_line(str(exc))})")
    if isinstance(exc, bx.ParamValidationError):
        # What we send comes from the request (say, a service-account token STS finds too short).
        report = str(getattr(exc, "kwargs", {}).get("report", exc))
        return BadInputError(f"{action}: invalid parameter: {first_line(report)}")
    if isinstance(exc, bx.BotoCoreError):
        return ProviderError(f"{action}: {type(exc).__name__}: {first_line(str(exc))}")
    return ProviderError(f"{action}: unexpected {type(exc).__name__}: {first_line(str(exc))}".rstrip(": "))


def first_line(text: str, limit: int = 200) -> str:
    """The first non-empty line of a message, bounded: errors are reported on one line."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = redact.scrub(line)
    return line if len(line) <= limit else line[: limit - 3] + "..."
