"""Decoding ECR authorization tokens."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecr_kubelet import redact
from ecr_kubelet.tokens import MalformedTokenError, decode_authorization_token


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_splits_user_and_password_at_the_first_colon() -> None:
    assert decode_authorization_token(b64("AWS:pass:with:colons")) == ("AWS", "pass:with:colons")


@pytest.mark.parametrize("encoded", ["%%not-base64%%", b64("no-colon"), b64(":nouser"), b64("AWS:"), "",
                                     base64.b64encode(b"\xff\xfe:x").decode()])
def test_malformed_tokens_are_rejected_without_echoing_them(encoded: str) -> None:
    with pytest.raises(MalformedTokenError) as caught:
        decode_authorization_token(encoded)
    assert encoded not in str(caught.value) or not encoded


def test_decoded_password_is_registered_as_a_secret() -> None:
    password = "eyJwYXlsb2FkIjoic2VjcmV0LXBhc3N3b3JkIn0"
    decode_authorization_token(b64("AWS:" + password))
    assert redact.scrub(f"x {password} y") == "x <redacted> y"


_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@given(st.text(min_size=1, max_size=256, alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E,
                                                                blacklist_characters=":")),
       st.text(min_size=1, max_size=4096, alphabet=_PRINTABLE))
def test_round_trip(user: str, password: str) -> None:
    assert decode_authorization_token(b64(f"{user}:{password}")) == (user, password)


@pytest.mark.parametrize("decoded", ["AWS:pass\nword", "AWS:pass\x00word", "A\tWS:password", "AWS:" + "p" * 20000])
def test_tokens_the_cache_would_refuse_are_malformed(decoded: str) -> None:
    with pytest.raises(MalformedTokenError, match="control characters or oversized"):
        decode_authorization_token(base64.b64encode(decoded.encode()).decode())
