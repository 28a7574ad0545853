"""Identity planning and cache fingerprints (standard library only, no AWS calls)."""

from __future__ import annotations

import pytest

from ecr_kubelet.errors import AuthError, BadInputError
from ecr_kubelet.identity import Identity, jwt_claims, node_fingerprint, plan_identity, session_name
from ecr_kubelet.options import Options
from helpers import make_jwt

ROLE = "arn:aws:iam::111122223333:role/pull"
ANNOTATION = {"eks.amazonaws.com/ecr-role-arn": ROLE}


def test_node_and_role_modes() -> None:
    assert plan_identity(None, {}, Options()) == Identity(mode="node")
    assert plan_identity(None, {}, Options(role_arn=ROLE)) == Identity(mode="role", role_arn=ROLE)


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
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAONE")
    one = node_fingerprint()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATWO")
    assert node_fingerprint() != one and "AKIATWO" not in node_fingerprint()
    a = plan_identity(make_jwt("system:serviceaccount:ns:a"), ANNOTATION, Options()).fingerprint()
    a_again = plan_identity(make_jwt("system:serviceaccount:ns:a"), ANNOTATION, Options()).fingerprint()
    b = plan_identity(make_jwt("system:serviceaccount:ns:b"), ANNOTATION, Options()).fingerprint()
    other_aud = plan_identity(make_jwt("system:serviceaccount:ns:a", aud="x"), ANNOTATION, Options()).fingerprint()
    assert a == a_again and len({a, b, other_aud}) == 3
    assert Identity(mode="role", role_arn=ROLE).fingerprint() != Identity(mode="node").fingerprint()


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
