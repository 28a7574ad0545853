"""The kubelet protocol: request decoding and validation, the quick path, and response encoding."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ecr_kubelet.deadline import Deadline
from ecr_kubelet.errors import BadInputError
from ecr_kubelet.models import Answer, Request
from ecr_kubelet.protocol import validate_request
from ecr_kubelet.wire import (
    API_VERSIONS,
    MAX_REQUEST_BYTES,
    decode_json_object,
    encode_response,
    quick_request,
    read_request_fd,
)

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app"
V1, V1BETA1, V1ALPHA1 = API_VERSIONS


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    username: str
    password: str


class CredentialProviderResponse(BaseModel):
    """The fields the kubelet's strict decoder knows, and nothing else."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: Literal["CredentialProviderResponse"]
    apiVersion: str
    cacheKeyType: Literal["Registry"]
    cacheDuration: str | None = None
    auth: dict[str, AuthConfig] = Field(default_factory=dict)

    @field_validator("apiVersion")
    @classmethod
    def _known(cls, version: str) -> str:
        assert version in API_VERSIONS
        return version


def request(**fields: Any) -> dict[str, Any]:
    return {"kind": "CredentialProviderRequest", "apiVersion": V1, "image": IMAGE, **fields}


@pytest.mark.parametrize("version", API_VERSIONS)
def test_every_version_round_trips(version: str) -> None:
    payload = decode_json_object(json.dumps(request(apiVersion=version)).encode() + b"\n")
    parsed = validate_request(payload)
    assert parsed == quick_request(payload) == Request(api_version=version, image=IMAGE)
    out = encode_response(version, Answer(auth={"h.example": ("AWS", "pw")}, cache_duration="6h0m0s"))
    assert out.endswith(b"}\n") and out.count(b"\n") == 1
    decoded = json.loads(out)
    assert decoded == {
        "kind": "CredentialProviderResponse", "apiVersion": version, "cacheKeyType": "Registry",
        "cacheDuration": "6h0m0s", "auth": {"h.example": {"username": "AWS", "password": "pw"}},
    }
    CredentialProviderResponse.model_validate(decoded)  # only fields the strict decoder knows


def test_empty_answer_omits_cache_duration_and_has_empty_auth() -> None:
    decoded = json.loads(encode_response(V1, Answer(auth={}, cache_duration=None)))
    assert decoded["auth"] == {} and "cacheDuration" not in decoded
    CredentialProviderResponse.model_validate(decoded)


def test_service_account_fields_in_v1() -> None:
    payload = request(serviceAccountToken="a.b.c", serviceAccountAnnotations={"k": "v"})
    expected = Request(V1, IMAGE, "a.b.c", {"k": "v"})
    assert quick_request(payload) == expected == validate_request(payload)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (request(kind="CredentialProviderResponse"), "kind must be"),
        (request(kind=None), "kind must be"),
        (request(apiVersion="credentialprovider.kubelet.k8s.io/v2"), "apiVersion must be one of"),
        (request(apiVersion="other.group/v1"), "apiVersion must be one of"),
        ({"kind": "CredentialProviderRequest", "apiVersion": V1}, "image"),
        (request(image=""), "image"),
        (request(image=42), "image"),
        (request(apiVersion=V1BETA1, serviceAccountToken="a.b.c"), "only in v1"),
        (request(apiVersion=V1ALPHA1, serviceAccountAnnotations={}), "only in v1"),
        (request(serviceAccountToken=7), "serviceAccountToken"),
        (request(serviceAccountAnnotations={"k": 1}), "serviceAccountAnnotations"),
    ],
)
def test_invalid_requests_are_rejected_precisely(payload: dict[str, Any], message: str) -> None:
    assert quick_request(payload) is None
    with pytest.raises(BadInputError, match=message):
        validate_request(payload)


def test_errors_never_echo_the_service_account_token() -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.signature-secret"
    with pytest.raises(BadInputError) as caught:
        validate_request(request(apiVersion=V1BETA1, serviceAccountToken=secret))
    assert secret not in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty request"),
        (b"   \n", "empty request"),
        (b"not json", "not valid JSON"),
        (b'{"kind": "CredentialProviderRequest"} trailing', "trailing data"),
        (b'{"a": 1}{"b": 2}', "trailing data"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"string"', "must be a JSON object"),
        (b'{"kind": "a", "kind": "b"}', "duplicate field 'kind'"),
        (b"\xff\xfe{}", "not valid UTF-8"),
    ],
)
def test_malformed_input(raw: bytes, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        decode_json_object(raw)


def test_oversized_input_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    def read(size: int) -> tuple[bytes, int]:
        path = tmp_path / f"request-{size}"
        path.write_bytes(b"x" * size)
        fd = os.open(path, os.O_RDONLY)
        try:
            return read_request_fd(fd, Deadline(10.0)), os.lseek(fd, 0, os.SEEK_CUR)
        finally:
            os.close(fd)

    with pytest.raises(BadInputError, match="larger than"):
        read(MAX_REQUEST_BYTES * 4)
    assert read(MAX_REQUEST_BYTES) == (b"x" * MAX_REQUEST_BYTES, MAX_REQUEST_BYTES)


def test_unknown_request_fields_are_ignored_by_the_full_validator() -> None:
    payload = request(futureField={"x": 1})
    assert quick_request(payload) is None  # not the canonical shape: the full validator decides
    assert validate_request(payload) == Request(V1, IMAGE)


_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=20),
    st.sampled_from([*API_VERSIONS, "CredentialProviderRequest", IMAGE, ""]),
    st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers()), max_size=3),
)
_payloads = st.dictionaries(
    st.sampled_from(["kind", "apiVersion", "image", "serviceAccountToken", "serviceAccountAnnotations",
                     "extra"]),
    _values,
    max_size=6,
).map(lambda d: {"kind": "CredentialProviderRequest", "apiVersion": V1, "image": IMAGE, **d})


@given(_payloads)
def test_quick_path_never_accepts_what_the_model_rejects(payload: dict[str, Any]) -> None:
    quick = quick_request(payload)
    if quick is None:
        return
    assert validate_request(payload) == quick
