"""Pod-identity mode's planning, options and cache keys (standard library only; the exchange itself is
tested end to end in test_pod_identity_e2e.py, against the stub's eks-auth)."""

from __future__ import annotations

import pytest

from ecr_kubelet.cache import cache_key
from ecr_kubelet.errors import AuthError, BadInputError
from ecr_kubelet.identity import plan_identity
from ecr_kubelet.models import Identity, NodeSource, PodIdentity, Registry
from ecr_kubelet.options import Options, check_cluster_name, flag_defaults, options_from_args
from ecr_kubelet.pod_identity import AUDIENCE
from ecr_kubelet.provider import choose_identity
from helpers import make_jwt

ROLE = "arn:aws:iam::111122223333:role/pull"
REGISTRY_ROLE = "arn:aws:iam::210987654321:role/registry-pull"
SUB = "system:serviceaccount:team:puller"
REGISTRY = Registry(kind="private", host="210987654321.dkr.ecr.us-west-2.amazonaws.com", partition="aws",
                    region="us-west-2", account="210987654321")


@pytest.fixture(autouse=True)
def env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAONE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")


def pod_token(sub: str = SUB, aud: str = AUDIENCE, iss: str = "https://oidc.example.test") -> str:
    return make_jwt(sub, iss=iss, aud=aud)


def options(**changes: object) -> Options:
    return Options(eks_cluster_name="prod").replace(**changes)


def test_a_token_without_role_annotation_is_exchanged_for_the_cluster() -> None:
    token = pod_token()
    identity = choose_identity(REGISTRY, token, {}, options())
    assert identity.mode == "pod-identity" and identity.claims is not None and identity.claims["sub"] == SUB
    assert identity.pod_identity is not None and identity.pod_identity.cluster == "prod"
    fallback = identity.pod_identity.fallback
    assert fallback is not None and fallback.mode == "node"  # --sa-without-role node (the default)
    assert token not in repr(identity) and token not in (identity.fingerprint() or "")
    assert "EKS Pod Identity (cluster prod)" in identity.describe()


def test_a_role_annotation_wins_and_no_token_stays_node_mode() -> None:
    annotated = choose_identity(REGISTRY, pod_token(), {"eks.amazonaws.com/ecr-role-arn": ROLE}, options())
    assert annotated.mode == "service-account" and annotated.role_arn == ROLE
    with_flag = choose_identity(REGISTRY, None, {}, options())
    without = choose_identity(REGISTRY, None, {}, Options())
    assert with_flag == without and with_flag.mode == "node"
    assert cache_key(REGISTRY, with_flag, {}) == cache_key(REGISTRY, without, {})


def test_without_the_flag_a_token_without_annotation_is_node_mode_as_before() -> None:
    assert choose_identity(REGISTRY, pod_token(), {}, Options()).mode == "node"


def test_sa_without_role_fail_leaves_no_fallback_and_role_arn_is_the_fallback() -> None:
    failing = choose_identity(REGISTRY, pod_token(), {}, options(sa_without_role="fail"))
    assert failing.pod_identity is not None and failing.pod_identity.fallback is None
    role = choose_identity(REGISTRY, pod_token(), {}, options(role_arn=ROLE))
    assert role.pod_identity is not None and role.pod_identity.fallback is not None
    assert role.pod_identity.fallback.mode == "role"


def test_a_registry_role_applies_to_the_fallback_only() -> None:
    identity = choose_identity(REGISTRY, pod_token(), {}, options(registry_roles={"210987654321": REGISTRY_ROLE}))
    assert identity.mode == "pod-identity" and identity.registry_role is None
    assert identity.pod_identity is not None and identity.pod_identity.fallback is not None
    assert identity.pod_identity.fallback.registry_role == REGISTRY_ROLE


def test_a_token_for_another_audience_is_an_auth_error() -> None:
    with pytest.raises(AuthError, match=AUDIENCE):
        plan_identity(pod_token(aud="sts.amazonaws.com"), {}, options())
    both = plan_identity(make_jwt(SUB, aud=AUDIENCE), {}, options())  # a list with it would do too
    assert both.mode == "pod-identity"


def test_a_token_with_spaces_is_a_bad_request_and_a_non_jwt_is_never_cached() -> None:
    with pytest.raises(BadInputError):
        plan_identity("a b.c.d", {}, options())
    opaque = choose_identity(REGISTRY, "opaque.token.value", {}, options())
    assert opaque.mode == "pod-identity" and opaque.fingerprint() is None


def key(identity: Identity, endpoints: dict[str, str] | None = None) -> str | None:
    return cache_key(REGISTRY, identity, endpoints or {})


def test_the_key_names_cluster_endpoint_issuer_subject_audience_and_fallback() -> None:
    base = choose_identity(REGISTRY, pod_token(), {}, options())
    same = choose_identity(REGISTRY, pod_token(), {}, options())  # a new token of the same service account
    assert key(base) is not None and key(base) == key(same)
    variants = [
        choose_identity(REGISTRY, pod_token(), {}, options(eks_cluster_name="other")),
        choose_identity(REGISTRY, pod_token(), {}, options(endpoints={"eks-auth": "https://eks-auth.vpce.test"})),
        choose_identity(REGISTRY, pod_token(iss="https://oidc.other.test"), {}, options()),
        choose_identity(REGISTRY, pod_token(sub="system:serviceaccount:team:other"), {}, options()),
        choose_identity(REGISTRY, pod_token(), {}, options(sa_without_role="fail")),
        choose_identity(REGISTRY, pod_token(), {}, options(role_arn=ROLE)),
    ]
    keys = {key(v) for v in variants}
    assert None not in keys and len(keys) == 6 and key(base) not in keys


def test_the_audience_is_in_the_key() -> None:
    one = Identity(mode="pod-identity", claims={"iss": "i", "sub": SUB, "aud": AUDIENCE},
                   pod_identity=PodIdentity("prod", "", None))
    two = one.replace(claims={"iss": "i", "sub": SUB, "aud": f"{AUDIENCE},other"})
    assert key(one) != key(two)


def test_an_unnamed_node_identity_makes_the_fallback_and_so_the_key_unnamed() -> None:
    unnamed = Identity(mode="pod-identity", claims={"iss": "i", "sub": SUB, "aud": AUDIENCE},
                       pod_identity=PodIdentity("prod", "", Identity(mode="node", node=None)))
    assert unnamed.fingerprint() is None


def test_a_pod_identity_key_never_equals_another_modes_key() -> None:
    claims = {"iss": "https://oidc.example.test", "sub": SUB, "aud": AUDIENCE}
    node = Identity(mode="node", node=NodeSource("env", "AKIAONE"))
    pod = Identity(mode="pod-identity", claims=claims, pod_identity=PodIdentity("prod", "", node))
    others = [
        node,
        Identity(mode="role", role_arn=ROLE, node=node.node),
        node.replace(registry_role=REGISTRY_ROLE),
        Identity(mode="service-account", role_arn=ROLE, claims=claims),
        # The closest an IRSA identity can come: every part of its fingerprint spelled like pod identity's.
        Identity(mode="service-account", role_arn="prod;endpoint=", claims=claims),
    ]
    pod_fingerprint = pod.fingerprint()
    assert pod_fingerprint is not None and pod_fingerprint.startswith("pod-identity=")
    for other in others:
        fingerprint = other.fingerprint()
        assert fingerprint is not None and not fingerprint.startswith("pod-identity=")
        assert key(other) != key(pod)


@pytest.mark.parametrize("name", ["prod", "a", "Prod-east_1", "9" * 100])
def test_valid_cluster_names(name: str) -> None:
    assert check_cluster_name(name) == name


@pytest.mark.parametrize("name", ["", "-prod", "_prod", "prod.east", "prod east", "prod/x", "é", "a" * 101])
def test_invalid_cluster_names_are_usage_errors(name: str) -> None:
    with pytest.raises(BadInputError, match="--eks-cluster-name"):
        check_cluster_name(name)


def parsed(args: dict[str, object], env: dict[str, str]) -> Options:
    return options_from_args({**flag_defaults(env), **args}, {"HOME": "/root", **env})


def test_the_flag_and_its_variable() -> None:
    assert parsed({}, {}).eks_cluster_name is None
    assert parsed({}, {"ECR_KUBELET_EKS_CLUSTER_NAME": "prod"}).eks_cluster_name == "prod"
    assert parsed({}, {"ECR_KUBELET_EKS_CLUSTER_NAME": ""}).eks_cluster_name is None  # empty: unset
    assert parsed({"eks_cluster_name": "flag"}, {"ECR_KUBELET_EKS_CLUSTER_NAME": "prod"}).eks_cluster_name == "flag"
    with pytest.raises(BadInputError, match="must not be empty"):
        parsed({"eks_cluster_name": ""}, {})
    with pytest.raises(BadInputError, match=r"^ECR_KUBELET_EKS_CLUSTER_NAME 'bad name' is not"):
        parsed({}, {"ECR_KUBELET_EKS_CLUSTER_NAME": "bad name"})
    with pytest.raises(BadInputError, match=r"^--eks-cluster-name 'bad\.name' is not"):
        parsed({"eks_cluster_name": "bad.name"}, {"ECR_KUBELET_EKS_CLUSTER_NAME": "prod"})


def test_the_eks_auth_endpoint_variable_is_read_with_the_others() -> None:
    env = {"AWS_ENDPOINT_URL_EKS_AUTH": "https://eks-auth.vpce.test"}
    assert parsed({}, env).endpoints == {"eks-auth": "https://eks-auth.vpce.test"}
