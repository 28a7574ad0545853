"""What one run did, for the metrics file and `diagnose`: its cache outcome and every AWS call attempt.

An `Observer` is created per run and passed down (never a global). The AWS side is a botocore event
hook on the run's session (`response-received`, emitted once per HTTP attempt, retries included), so
every call is seen with its outcome, throttled attempts that a retry later fixed included. Standard
library only: a cache hit never loads botocore for this.
"""

from __future__ import annotations

from ecr_kubelet.models import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from botocore.session import Session

_UNSAFE_CODE_CHARACTERS = r"[^A-Za-z0-9_.:-]"


class AwsCall(Value):
    """One HTTP attempt of one AWS operation. `code`: AWS's error code, or the exception class of a
    network failure; None on success. `message`: AWS's error text (never holds secrets)."""

    __slots__ = ("code", "message", "operation", "result", "service", "status")
    service: str
    operation: str
    result: str  # success | throttled | denied | client_error | server_error | network_error
    status: int | None
    code: str | None
    message: str

    def __init__(self, service: str, operation: str, result: str, status: int | None, code: str | None = None,
                 message: str = "") -> None:
        self._init(service=service, operation=operation, result=result, status=status, code=code, message=message)

    @property
    def name(self) -> str:
        return f"{self.service}:{self.operation}"


class Chain(Value):
    """What botocore's default credential chain found when the pipeline resolved it (for diagnose, which
    so never resolves the credentials a second time): the provider's method, whether the credentials are
    temporary, the access key id cut to its ends; or the exception it raised (`error`)."""

    __slots__ = ("error", "key_hint", "method", "temporary")
    method: str | None  # None: the chain found no credentials (or failed: `error`)
    temporary: bool
    key_hint: str
    error: Exception | None

    def __init__(self, method: str | None, temporary: bool = False, key_hint: str = "",
                 error: Exception | None = None) -> None:
        self._init(method=method, temporary=temporary, key_hint=key_hint, error=error)


class Observer:
    __slots__ = ("cache", "calls", "chain", "credentials", "not_found", "pod_identity", "stale")

    def __init__(self) -> None:
        self.cache: str | None = None  # "hit" or "miss" once the token cache was consulted
        self.stale = False  # a refresh failed and the still-valid cached token was served
        self.credentials = False  # the answer carried credentials
        self.not_found = False  # the Docker helper answered "credentials not found" (exit 1, no failure)
        self.calls: list[AwsCall] = []
        # What eks-auth answered in pod-identity mode (association, role, subject), for diagnose.
        self.pod_identity: dict[str, str] | None = None
        self.chain: Chain | None = None  # None: the run never resolved the node's credentials

    def attach(self, session: Session) -> None:
        """Watch every AWS call made through clients created from this session afterwards, and what its
        credential chain finds (session.get_credentials is wrapped on this run's own session object)."""
        session.register("response-received", self._on_response)
        resolve = session.get_credentials

        def get_credentials() -> Any:
            try:
                creds = resolve()
            except Exception as exc:
                self.chain = Chain(None, error=exc)
                raise
            if creds is None:
                self.chain = Chain(None)
            elif self.chain is None or self.chain.method is None:
                frozen = creds.get_frozen_credentials()
                key = frozen.access_key or ""
                hint = f"{key[:4]}...{key[-4:]}" if len(key) >= 12 else "(short key id)"
                self.chain = Chain(str(getattr(creds, "method", "unknown")), bool(frozen.token), hint)
            return creds

        session.get_credentials = get_credentials  # type: ignore[method-assign]

    def _on_response(self, event_name: str = "", parsed_response: Any = None, exception: Any = None,
                     **_kwargs: Any) -> None:
        import re  # loaded by botocore already: this runs only for AWS calls

        from ecr_kubelet.aws_errors import classify  # AWS calls only: a cache hit never loads it

        parts = event_name.split(".")
        service, operation = (parts[1], parts[2]) if len(parts) >= 3 else ("unknown", "unknown")
        if exception is not None:
            self.calls.append(AwsCall(service, operation, "network_error", None, type(exception).__name__))
            return
        response = parsed_response if isinstance(parsed_response, dict) else {}
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0) or None
        error = response.get("Error") or {}
        code = re.sub(_UNSAFE_CODE_CHARACTERS, "_", str(error.get("Code") or ""))[:64] or None
        self.calls.append(AwsCall(service, operation, classify(status, code), status, code,
                                  str(error.get("Message") or "")[:300]))


def is_clock_skew(call: AwsCall) -> bool:
    from ecr_kubelet import aws_errors

    return aws_errors.is_clock_skew(call.code, call.message)
