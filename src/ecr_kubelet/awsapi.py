"""botocore plumbing shared by the identity and token modules: clients and error translation.

Imported only when a request actually needs AWS, so cache hits never pay for botocore.
"""

from __future__ import annotations

import os
from typing import Any

import botocore.session
from botocore import UNSIGNED
from botocore import exceptions as bx
from botocore.config import Config

from ecr_kubelet import __version__
from ecr_kubelet.errors import AuthError, ProviderError, UnavailableError
from ecr_kubelet.registry import Registry, configured_endpoint

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 10.0
DEFAULT_MAX_ATTEMPTS = 5

_AUTH_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedException", "UnrecognizedClientException",
    "InvalidClientTokenId", "SignatureDoesNotMatch", "InvalidSignatureException", "ExpiredToken",
    "ExpiredTokenException", "InvalidIdentityToken", "IDPRejectedClaim", "IDPCommunicationError",
    "RegionDisabledException", "MissingAuthenticationToken", "NotAuthorized",
})
_THROTTLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "LimitExceededException", "RequestThrottled",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure", "InternalError",
    "ServerException", "RequestTimeout", "RequestTimeoutException",
})
_CREDENTIAL_ERRORS: tuple[type[Exception], ...] = (
    bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError,
    bx.TokenRetrievalError, bx.SSOError, bx.UnauthorizedSSOTokenError, bx.InvalidConfigError,
    bx.ProfileNotFound,
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


def client_config(service: str, registry: Registry, *, unsigned: bool = False) -> Config:
    """Timeouts, retries and the FIPS / dual-stack endpoint variant that matches the registry host."""
    kwargs: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        "retries": {
            "mode": os.environ.get("AWS_RETRY_MODE") or "standard",
            "total_max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS),
        },
    }
    # botocore refuses FIPS/dual-stack together with a custom endpoint; the override wins.
    if configured_endpoint(service) is None:
        if registry.fips:
            kwargs["use_fips_endpoint"] = True
        if registry.dualstack:
            kwargs["use_dualstack_endpoint"] = True
    if unsigned:
        kwargs["signature_version"] = UNSIGNED
    return Config(**kwargs)


def translate_error(exc: Exception, action: str) -> ProviderError:
    """Map a botocore failure to our error classes, with a one-line message free of secrets."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = f"{action} failed: {code}: {error.get('Message', '')}".rstrip(": ")
        if code in _THROTTLE_CODES or status >= 500:
            return UnavailableError(message)
        if code in _AUTH_CODES or status in (401, 403):
            return AuthError(message)
        return ProviderError(message)
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return AuthError(f"{action}: no usable AWS credentials ({type(exc).__name__}: {exc})")
    if isinstance(exc, _NETWORK_ERRORS):
        return UnavailableError(f"{action}: AWS unreachable ({type(exc).__name__}: {exc})")
    if isinstance(exc, bx.BotoCoreError):
        return ProviderError(f"{action}: {type(exc).__name__}: {exc}")
    return ProviderError(f"{action}: unexpected {type(exc).__name__}")
