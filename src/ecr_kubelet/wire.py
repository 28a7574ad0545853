"""Reading requests and writing responses with the standard library only.

The kubelet runs us once per image, so start-up time is the product: a cache hit must not pay for
importing pydantic. `quick_request` accepts only the canonical request shape (a strict subset of what
`protocol.CredentialProviderRequest` accepts, which the tests check property by property); everything
else goes through the pydantic model for full validation and a precise error.
"""

from __future__ import annotations

import os

from ecr_kubelet import jsoncodec
from ecr_kubelet.errors import BadInputError
from ecr_kubelet.models import Answer, Request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ecr_kubelet.deadline import Deadline

API_GROUP = "credentialprovider.kubelet.k8s.io"
API_VERSIONS = (f"{API_GROUP}/v1", f"{API_GROUP}/v1beta1", f"{API_GROUP}/v1alpha1")
V1 = API_VERSIONS[0]
REQUEST_KIND = "CredentialProviderRequest"
RESPONSE_KIND = "CredentialProviderResponse"
MAX_REQUEST_BYTES = 1024 * 1024
_REQUEST_FIELDS = frozenset(
    {"kind", "apiVersion", "image", "serviceAccountToken", "serviceAccountAnnotations"}
)


def read_request_fd(fd: int, deadline: Deadline) -> bytes:
    """The request up to end of file, read within the deadline (the kubelet closes stdin after it)."""
    import select

    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline.remaining()
        try:
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            chunk = os.read(fd, 64 * 1024) if ready else b""
        except OSError as exc:  # closed (EBADF), a directory (EISDIR), ...: no request to read
            raise BadInputError(f"cannot read the request from stdin: {exc.strerror or exc}") from None
        if not ready:
            if left > 0:
                continue
            raise BadInputError(
                f"stdin was not read to its end within {deadline.timeout:g}s (--timeout): "
                "the request was never completed or stdin never closed"
            )
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise BadInputError(f"request is larger than {MAX_REQUEST_BYTES} bytes")
        chunks.append(chunk)


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """One JSON object, optionally surrounded by white space; nothing else."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError("request is not valid UTF-8") from None
    if not text.strip():
        raise BadInputError("empty request on stdin (expected a CredentialProviderRequest JSON object)")
    try:
        payload = jsoncodec.loads(text, object_pairs_hook=reject_duplicate_keys)
    except DuplicateKeyError as exc:
        raise BadInputError(f"request has a {exc}") from None
    except RecursionError:
        raise BadInputError("request is not a CredentialProviderRequest: JSON nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError
        msg = getattr(exc, "msg", str(exc))
        reason = "trailing data after the JSON object" if msg == "Extra data" else msg
        where = f"line {getattr(exc, 'lineno', '?')} column {getattr(exc, 'colno', '?')}"
        raise BadInputError(f"request is not valid JSON: {reason} at {where}") from None
    if not isinstance(payload, dict):
        raise BadInputError("request must be a JSON object")
    return payload


class DuplicateKeyError(ValueError):
    """A JSON object names the same field twice (Go's strict decoders reject this too)."""


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads` object hook that refuses duplicate fields instead of keeping the last one."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(f"duplicate field {key!r}")
        result[key] = value
    return result


def quick_request(payload: dict[str, Any]) -> Request | None:
    """The canonical request shape, or None when the full validator must decide."""
    if not payload.keys() <= _REQUEST_FIELDS or payload.get("kind") != REQUEST_KIND:
        return None
    version, image = payload.get("apiVersion"), payload.get("image")
    if version not in API_VERSIONS or not isinstance(image, str) or not image:
        return None
    token = payload.get("serviceAccountToken")
    annotations = payload.get("serviceAccountAnnotations")
    if token is None and annotations is None:
        return Request(api_version=version, image=image)
    if version != V1 or not isinstance(token, str | None) or not _is_str_map(annotations):
        return None
    return Request(
        api_version=version, image=image, service_account_token=token,
        service_account_annotations=dict(annotations or {}),
    )


def _is_str_map(value: object) -> bool:
    if value is None:
        return True
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def encode_response(api_version: str, answer: Answer) -> bytes:
    """One compact JSON object and a newline, with only the fields the kubelet's strict decoder knows."""
    body: dict[str, Any] = {"kind": RESPONSE_KIND, "apiVersion": api_version, "cacheKeyType": "Registry"}
    if answer.cache_duration is not None:
        body["cacheDuration"] = answer.cache_duration
    body["auth"] = {key: {"username": user, "password": pw} for key, (user, pw) in answer.auth.items()}
    return jsoncodec.dumps(body, ensure_ascii=False, compact=True).encode() + b"\n"
