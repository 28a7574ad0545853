"""The kubelet's CredentialProviderRequest, validated in full (credentialprovider.kubelet.k8s.io).

`validate_request` is the full, authoritative validation of what the kubelet sends us.
`wire.quick_request` admits the common exact request shape without importing pydantic; anything it is
unsure about comes here. Both accept the API versions of `wire.API_VERSIONS`, the one list of them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ecr_kubelet.errors import BadInputError
from ecr_kubelet.models import Request
from ecr_kubelet.wire import API_GROUP, API_VERSIONS, REQUEST_KIND, V1


class CredentialProviderRequest(BaseModel):
    """What the kubelet writes on stdin. Unknown fields are ignored for forward compatibility."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    kind: Literal["CredentialProviderRequest"]
    apiVersion: str  # one of API_VERSIONS: validate_request checks it first, for a precise message
    image: str = Field(min_length=1)
    serviceAccountToken: str | None = None
    serviceAccountAnnotations: dict[str, str] | None = None

    @model_validator(mode="after")
    def _service_account_fields_are_v1_only(self) -> CredentialProviderRequest:
        has_sa = self.serviceAccountToken is not None or self.serviceAccountAnnotations is not None
        if has_sa and self.apiVersion != V1:
            raise ValueError("serviceAccountToken and serviceAccountAnnotations exist only in v1 requests")
        return self


def validate_request(payload: dict[str, Any]) -> Request:
    """Validate a decoded request, raising BadInputError with one precise, secret-free line."""
    kind = payload.get("kind")
    if kind != REQUEST_KIND:
        raise BadInputError(f"kind must be {REQUEST_KIND!r}, got {_short(kind)}")
    version = payload.get("apiVersion")
    if version not in API_VERSIONS:
        raise BadInputError(
            f"apiVersion must be one of {', '.join(API_VERSIONS)} (group {API_GROUP}), got {_short(version)}"
        )
    try:
        model = CredentialProviderRequest.model_validate(payload)
    except ValidationError as exc:
        raise BadInputError(f"invalid request: {_first_error(exc)}") from None
    return Request(
        api_version=model.apiVersion,
        image=model.image,
        service_account_token=model.serviceAccountToken,
        service_account_annotations=dict(model.serviceAccountAnnotations or {}),
    )


def _first_error(exc: ValidationError) -> str:
    # Never include the offending input: it may be the service-account token.
    err = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in err["loc"]) or "request"
    return f"{where}: {err['msg']}"


def _short(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool) or value is None else "an object"
    return text if len(text) <= 80 else text[:77] + "..."
