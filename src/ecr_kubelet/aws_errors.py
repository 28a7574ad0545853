"""What an AWS answer means, decided once for the retry-free error translation (awsapi), the per-call
record (observe: metrics and diagnose) and diagnose's hints: one classifier, one set of code lists.

Standard library only: the observer classifies every call of a miss, and the lists are plain data.
"""

from __future__ import annotations

# Throttling, as botocore's standard retry mode names it (botocore.retries.standard), plus 429.
THROTTLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled", "SlowDown",
    "PriorRequestNotComplete", "EC2ThrottledException",
})
# AWS is failing, whatever the HTTP status says: as a 5xx.
UNAVAILABLE_CODES = frozenset({
    "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure", "InternalError", "ServerException",
    "RequestTimeout", "RequestTimeoutException",
})
# The caller's credentials or the token it presents are refused: exit 3, not a retry.
AUTH_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedException", "UnrecognizedClientException",
    "InvalidClientTokenId", "SignatureDoesNotMatch", "InvalidSignatureException", "ExpiredToken",
    "ExpiredTokenException", "InvalidIdentityToken", "IDPRejectedClaim", "IDPCommunicationError",
    "RegionDisabledException", "MissingAuthenticationToken", "NotAuthorized",
    "InvalidTokenException",  # eks-auth: the service-account token is not valid for Pod Identity
})
# The request's signing time was refused: the node's clock, when the message says so (is_clock_skew).
CLOCK_CODES = frozenset({"RequestTimeTooSkewed", "RequestExpired", "InvalidSignatureException",
                         "SignatureDoesNotMatch"})

RESULTS = ("success", "throttled", "denied", "client_error", "server_error", "network_error")


def classify(status: int | None, code: str | None) -> str:
    """An HTTP answer's result: success, throttled, denied, server_error or client_error (a call that got
    no answer is a network_error, said by whoever saw the exception)."""
    if code is None and status is not None and status < 300:
        return "success"
    if code in THROTTLE_CODES or status == 429:
        return "throttled"
    if code in AUTH_CODES or status in (401, 403):
        return "denied"
    if code in UNAVAILABLE_CODES or (status is not None and status >= 500):
        return "server_error"
    return "client_error"


def is_clock_skew(code: str | None, message: str) -> bool:
    text = message.lower()
    return code in CLOCK_CODES and ("expired" in text or "skew" in text or code == "RequestTimeTooSkewed")
