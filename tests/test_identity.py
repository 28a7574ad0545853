"""Identity planning and cache fingerprints (standard library only, no AWS calls)."""

from __future__ import annotations

import base64

import pytest

from ecr_kubelet.claims import jwt_claims
from ecr_kubelet.credentials import session_name
from ecr_kubelet.errors import AuthError, BadInputError
from ecr_kubelet.identity import plan_identity
from ecr_kubelet.models import Identity, NodeSource
from ecr_kubelet.options import Options
from helpers import make_jwt

ROLE = "arn:aws:iam::111122223333:role/pull"
ANNOTATION = {"eks.amazonaws.com/ecr-role-arn": ROLE}


@pytest.fixture(autouse=True)
def env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAONE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")


def test_node_and_role_modes() -> None:
    node = plan_identity(None, {}, Options())
    assert node == Identity(mode="node") and node.node is not None and node.node.method == "env"
    role = plan_identity(None, {}, Options(role_arn=ROLE))
    assert role == Identity(mode="role", role_arn=ROLE) and role.node is not None


def test_service_account_mode_reads_the_role_annotation() -> None:
    token = make_jwt("system:serviceaccount:ns:sa")
    identity = plan_identity(token, ANNOTATION, Options())
    assert identity.mode == "service-account" and identity.role_arn == ROLE
    assert identity.claims == {"iss": "https://oidc.example.test", "sub": "system:serviceaccount:ns:sa",
                               "aud": "sts.amazonaws.com"}
    assert token not in repr(identity)
    assert token not in (identity.fingerprint() or "")


def test_annotation_preference_order_and_policy() -> None:
    token = make_jwt("system:serviceaccount:ns:sa")
    other = "arn:aws:iam::444455556666:role/other"
    both = {"eks.amazonaws.com/role-arn": other, "eks.amazonaws.com/ecr-role-arn": ROLE}
    assert plan_identity(token, both, Options()).role_arn == ROLE
    assert plan_identity(token, {}, Options()).mode == "node"
    assert plan_identity(token, {}, Options(role_arn=ROLE)).mode == "role"
    with pytest.raises(AuthError):
        plan_identity(token, {}, Options(sa_without_role="fail"))
    with pytest.raises(BadInputError):
        plan_identity(token, {"eks.amazonaws.com/ecr-role-arn": "not an arn"}, Options())


def test_fingerprints_separate_identities(monkeypatch: pytest.MonkeyPatch) -> None:
    one = plan_identity(None, {}, Options()).fingerprint()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATWO")
    two = plan_identity(None, {}, Options()).fingerprint()
    assert one and two and one != two and "AKIATWO" not in two
    assert Identity(mode="node", node=None).fingerprint() is None  # unknown signer: never cached
    assert Identity(mode="role", role_arn=ROLE, node=None).fingerprint() is None
    source = NodeSource("env", "x")
    assert Identity(mode="role", role_arn=ROLE, node=source).fingerprint() != Identity(
        mode="node", node=source).fingerprint()
    a = plan_identity(make_jwt("system:serviceaccount:ns:a"), ANNOTATION, Options()).fingerprint()
    a_again = plan_identity(make_jwt("system:serviceaccount:ns:a"), ANNOTATION, Options()).fingerprint()
    b = plan_identity(make_jwt("system:serviceaccount:ns:b"), ANNOTATION, Options()).fingerprint()
    other_aud = plan_identity(make_jwt("system:serviceaccount:ns:a", aud="x"), ANNOTATION, Options()).fingerprint()
    assert a == a_again and len({a, b, other_aud}) == 3


@pytest.mark.parametrize("token", ["", "abc", "x" * 20001])
def test_a_token_sts_would_refuse_for_its_length_is_a_bad_request(token: str) -> None:
    with pytest.raises(BadInputError, match="serviceAccountToken must be 4 to 20000 characters"):
        plan_identity(token, ANNOTATION, Options())


def test_a_token_that_is_not_a_jwt_is_never_cached() -> None:
    identity = plan_identity("opaque-token-value", ANNOTATION, Options())
    assert identity.claims is None and identity.fingerprint() is None
    assert jwt_claims("a.b") is None and jwt_claims("a.!!!.c") is None


def test_session_name_is_valid_for_sts() -> None:
    identity = plan_identity(make_jwt("system:serviceaccount:team:puller"), ANNOTATION, Options())
    assert session_name(identity) == "team.puller"
    long = plan_identity(make_jwt("system:serviceaccount:" + "n" * 70 + ":s p"), ANNOTATION, Options())
    name = session_name(long)
    assert 2 <= len(name) <= 64 and " " not in name
    assert session_name(Identity(mode="node")) == "ecr-credential-provider"


def test_a_token_with_a_deeply_nested_payload_is_just_not_a_jwt() -> None:
    payload = base64.urlsafe_b64encode(b"[" * 12000).rstrip(b"=").decode()
    token = f"eyJhbGciOiJub25lIn0.{payload}.sig"
    assert jwt_claims(token) is None
    assert plan_identity(token, ANNOTATION, Options()).fingerprint() is None


def test_claim_sets_that_read_alike_when_joined_get_different_fingerprints() -> None:
    def fingerprint(claims: dict[str, str]) -> str | None:
        return Identity(mode="service-account", role_arn=ROLE, web_identity_token="t", claims=claims).fingerprint()

    one = fingerprint({"iss": "https://oidc", "sub": "system:serviceaccount:ns:a;aud=x", "aud": "y"})
    two = fingerprint({"iss": "https://oidc", "sub": "system:serviceaccount:ns:a", "aud": "x;aud=y"})
    assert one is not None and two is not None and one != two


def test_an_audience_list_never_reads_as_one_audience() -> None:
    def claims(aud: object) -> dict[str, str] | None:
        return jwt_claims(make_jwt("system:serviceaccount:ns:a", aud=aud))  # type: ignore[arg-type]

    listed, joined, bracketed = claims(["a", "b"]), claims("a,b"), claims('["a","b"]')
    assert listed is not None and joined is not None and bracketed is not None
    assert len({listed["aud"], joined["aud"], bracketed["aud"]}) == 3
    assert claims(["a"]) == claims("a")  # one audience, either way
    assert claims(7) is None and claims(["a", 7]) is None  # not what a service-account token carries
