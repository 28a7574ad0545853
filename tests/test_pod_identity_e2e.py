"""EKS Pod Identity end to end: the installed command (or the built binary) exchanging a pod's token with the
stub's eks-auth, as the kubelet runs it.

Every test is marked e2e; CI runs the same tests against the built binary (ECR_KUBELET_TEST_BINARY).
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ecr_kubelet.durations import parse_go_duration
from helpers import RunProvider, StubClient, make_jwt, make_request, run_released_together

pytestmark = pytest.mark.e2e

CLUSTER = "prod-east"
NODE_KEY = "AKIAIOSFODNN7EXAMPLE"
NODE_SECRET = "stubSECRET/DoNotLeak+wJalrXUtnFEMI/K7MDENG"
ROLE_ACCOUNT = "210987654321"
TEAM_ROLE = f"arn:aws:iam::{ROLE_ACCOUNT}:role/team-pull"
IRSA_ROLE = "arn:aws:iam::111122223333:role/irsa-pull"
REGISTRY = f"{ROLE_ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com"
IMAGE = f"{REGISTRY}/team/app"
AUDIENCE = "pods.eks.amazonaws.com"
ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/PODID"
PULLER = "system:serviceaccount:team:puller"


@pytest.fixture
def env(provider_env: dict[str, str], stub: StubClient) -> dict[str, str]:
    stub.configure(pod_identity_associations={CLUSTER: {"team/puller": TEAM_ROLE, "team/builder": TEAM_ROLE}})
    # The node's region (us-east-1) is not the registry's (us-west-2): eks-auth is called in the node's.
    return {**provider_env, "AWS_ENDPOINT_URL_EKS_AUTH": stub.url, "ECR_KUBELET_EKS_CLUSTER_NAME": CLUSTER}


def pod_request(sub: str = PULLER, image: str = IMAGE, annotations: dict[str, str] | None = None,
                aud: str = AUDIENCE, token: str | None = None, exp_in: int = 3600) -> dict[str, Any]:
    # A new token every time, as the kubelet mints one per pull.
    return make_request(image, serviceAccountToken=token or make_jwt(sub, iss=ISSUER, aud=aud, exp_in=exp_in),
                        serviceAccountAnnotations=annotations or {})


def answer(result: subprocess.CompletedProcess[str]) -> tuple[str, float]:
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    [(key, auth)] = body["auth"].items()
    assert key == REGISTRY
    return auth["password"], parse_go_duration(body["cacheDuration"])


def failed(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert (result.returncode, result.stdout) == (code, ""), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_an_associated_service_account_pulls_with_its_role(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str]
) -> None:
    password, _ = answer(run_provider(pod_request(), env=env))
    [exchange] = stub.calls("eks-auth", "AssumeRoleForPodIdentity")
    # Signed with the node's credentials, in the node's region, for the configured cluster.
    assert (exchange["status"], exchange["access_key_id"], exchange["region"]) == (200, NODE_KEY, "us-east-1")
    assert exchange["cluster"] == CLUSTER and exchange["role_arn"] == TEAM_ROLE
    assert exchange["web_identity"] == {"iss": ISSUER, "sub": PULLER, "aud": AUDIENCE}
    [ecr] = stub.calls("ecr")
    # ECR is called with the associated role's credentials, in the registry's region, for its account.
    assert ecr["access_key_id"] == exchange["issued_access_key_id"] and ecr["region"] == "us-west-2"
    assert ecr["registry_ids"] == [ROLE_ACCOUNT] and ecr["password"] == password
    assert stub.calls("sts") == []


def test_a_cache_hit_makes_no_eks_auth_or_ecr_call(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str]
) -> None:
    first, _ = answer(run_provider(pod_request(), env=env))
    calls = len(stub.calls())
    second, _ = answer(run_provider(pod_request(image=f"{REGISTRY}/team/other"), env=env))  # a new token, same SA
    assert second == first and len(stub.calls()) == calls == 2


def test_each_service_account_has_its_own_entry(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str]
) -> None:
    puller, _ = answer(run_provider(pod_request(), env=env))
    builder, _ = answer(run_provider(pod_request("system:serviceaccount:team:builder"), env=env))
    assert puller != builder  # one role, two service accounts: two exchanges, two tokens
    assert [c["web_identity"]["sub"] for c in stub.calls("eks-auth")] == [PULLER, "system:serviceaccount:team:builder"]
    other_cluster = answer(run_provider(pod_request(), env={**env, "ECR_KUBELET_EKS_CLUSTER_NAME": "other"}))
    assert other_cluster[0] not in (puller, builder)  # another cluster never shares a token


def test_cache_duration_never_outlives_the_pod_identity_credentials(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str]
) -> None:
    stub.configure(pod_identity_lifetime_seconds=1200)  # ECR's token would live 12 h
    _, duration = answer(run_provider(pod_request(), env=env))
    assert 0 < duration <= 1200 / 2  # the refresh point of a 20-minute life
    _, again = answer(run_provider(pod_request(), env=env))  # served from the cache with the same bound
    assert 0 < again <= duration


def test_a_service_account_without_association_uses_the_node_and_is_cached(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str]
) -> None:
    request = pod_request("system:serviceaccount:team:plain")
    first, _ = answer(run_provider(request, env=env))
    [exchange] = stub.calls("eks-auth")
    assert exchange["status"] == 404
    [ecr] = stub.calls("ecr")
    assert ecr["access_key_id"] == NODE_KEY and ecr["password"] == first
    second, _ = answer(run_provider(pod_request("system:serviceaccount:team:plain"), env=env))
    assert second == first and len(stub.calls()) == 2  # no second exchange for that service account


def test_without_association_and_sa_without_role_fail_nothing_is_fetched(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str]
) -> None:
    line = failed(run_provider(pod_request("system:serviceaccount:team:plain"), "--sa-without-role", "fail",
                               env=env), 3)
    assert "association" in line and CLUSTER in line
    assert stub.calls("ecr") == []


def test_a_role_annotation_wins_over_pod_identity(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str]
) -> None:
    request = pod_request(annotations={"eks.amazonaws.com/ecr-role-arn": IRSA_ROLE})
    answer(run_provider(request, env=env))
    assert stub.calls("eks-auth") == []
    [sts] = stub.calls("sts", "AssumeRoleWithWebIdentity")
    assert sts["role_arn"] == IRSA_ROLE


def test_the_cluster_name_alone_never_changes_a_node_mode_request(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str], provider_env: dict[str, str]
) -> None:
    node_request = make_request(IMAGE)  # no service-account token: a static pod, or no tokenAttributes
    first, _ = answer(run_provider(node_request, env=provider_env))
    second, _ = answer(run_provider(node_request, "--eks-cluster-name", CLUSTER, env=env))
    assert second == first  # the same cache entry: the same identity
    assert stub.calls("eks-auth") == [] and len(stub.calls("ecr")) == 1


@pytest.mark.parametrize("token, why", [
    (None, "expired"),  # eks-auth: ExpiredTokenException
    ("not-a.jwt.at-all", "invalid"),  # eks-auth: InvalidTokenException
])
def test_an_invalid_or_expired_token_is_exit_3(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str], token: str | None, why: str
) -> None:
    request = pod_request(token=token, exp_in=-600)
    line = failed(run_provider(request, env=env), 3)
    assert "AssumeRoleForPodIdentity" in line
    assert [c["status"] for c in stub.calls("eks-auth")] == [400] and stub.calls("ecr") == []


def test_a_token_for_another_audience_is_refused_without_a_call(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str]
) -> None:
    line = failed(run_provider(pod_request(aud="sts.amazonaws.com"), env=env), 3)
    assert AUDIENCE in line and "sts.amazonaws.com" in line
    assert stub.calls() == []


def test_a_node_denied_eks_auth_is_exit_3(run_provider: RunProvider, stub: StubClient, env: dict[str, str]) -> None:
    stub.configure(deny_pod_identity=True)
    line = failed(run_provider(pod_request(), env=env), 3)
    assert "AssumeRoleForPodIdentity" in line and "AccessDenied" in line
    assert stub.calls("ecr") == []


def test_throttling_is_retried_then_answers(run_provider: RunProvider, stub: StubClient, env: dict[str, str]) -> None:
    stub.configure(throttle_eks_auth_next=2)
    answer(run_provider(pod_request(), env=env))
    assert [c["status"] for c in stub.calls("eks-auth")] == [429, 429, 200]


def test_sustained_throttling_is_exit_4(run_provider: RunProvider, stub: StubClient, env: dict[str, str]) -> None:
    stub.configure(throttle_eks_auth_next=10**6)
    line = failed(run_provider(pod_request(), "--timeout", "3s", env=env), 4)
    assert "AssumeRoleForPodIdentity" in line
    assert stub.calls("ecr") == []


def test_the_node_region_may_come_from_aws_region_alone(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str]
) -> None:
    # AWS_REGION is what the SDKs read first and what the region error asks for; botocore alone ignores it.
    only = {k: v for k, v in env.items() if k != "AWS_DEFAULT_REGION"}
    answer(run_provider(pod_request(), env={**only, "AWS_REGION": "eu-central-1"}))
    [exchange] = stub.calls("eks-auth", "AssumeRoleForPodIdentity")
    assert (exchange["status"], exchange["region"]) == (200, "eu-central-1")
    line = failed(run_provider(pod_request("system:serviceaccount:team:builder"), env=only), 2)
    assert "region is unknown" in line and "AWS_REGION" in line


def test_the_eks_auth_endpoint_variable_is_honoured(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str]
) -> None:
    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = run_provider(pod_request(), "--timeout", "5s",
                          env={**env, "AWS_ENDPOINT_URL_EKS_AUTH": f"http://127.0.0.1:{port}", "AWS_MAX_ATTEMPTS": "1"})
    line = failed(result, 4)
    assert "AssumeRoleForPodIdentity" in line and "unreachable" in line
    assert stub.calls() == []


def test_no_secret_reaches_stderr_at_full_verbosity(
    run_provider: RunProvider, stub: StubClient, env: dict[str, str]
) -> None:
    token = make_jwt(PULLER, iss=ISSUER, aud=AUDIENCE)
    result = run_provider(pod_request(token=token), "-vv", env=env)
    password, _ = answer(result)
    for secret in (token, token.split(".")[2], NODE_SECRET, password, "stubsession-"):
        assert secret not in result.stderr
    assert "pod identity association" in result.stderr  # -v tells what the exchange gave


def run_concurrently(provider_cmd: list[str], env: dict[str, str], outputs: Path,
                     count: int) -> list[subprocess.CompletedProcess[str]]:
    """`count` runs for pods of one service account, started first, then released at once."""
    return run_released_together(provider_cmd, env, outputs,
                                 [pod_request(image=f"{REGISTRY}/team/app-{i}") for i in range(count)])


def test_concurrent_pods_of_one_service_account_make_one_exchange(
    provider_cmd: list[str], stub: StubClient, env: dict[str, str], tmp_path: Path
) -> None:
    stub.configure(eks_auth_delay_seconds=0.3)
    results = run_concurrently(provider_cmd, env, tmp_path / "outputs", 10)
    assert len({answer(r)[0] for r in results}) == 1
    assert len(stub.calls("eks-auth")) == 1 and len(stub.calls("ecr")) == 1


def test_sustained_throttling_is_one_flight_and_every_run_is_exit_4(
    provider_cmd: list[str], stub: StubClient, env: dict[str, str], tmp_path: Path
) -> None:
    # Each answer takes 1 s, so one flight of at most 8 s holds at most 8 calls: the runs queued behind
    # it never call eks-auth themselves.
    stub.configure(throttle_eks_auth_next=10**6, eks_auth_delay_seconds=1.0)
    results = run_concurrently([*provider_cmd, "--timeout", "8s"], env, tmp_path / "outputs", 6)
    for result in results:
        failed(result, 4)
    assert 1 <= len(stub.calls("eks-auth")) <= 8 and stub.calls("ecr") == []


@pytest.mark.parametrize("args, variable, named", [
    (("--eks-cluster-name", "prod.east"), CLUSTER, "--eks-cluster-name"),
    (("--eks-cluster-name", ""), CLUSTER, "--eks-cluster-name"),
    ((), "-prod", "ECR_KUBELET_EKS_CLUSTER_NAME"),
])
def test_a_bad_cluster_name_is_a_usage_error(run_provider: RunProvider, stub: StubClient, env: dict[str, str],
                                             args: tuple[str, ...], variable: str, named: str) -> None:
    line = failed(run_provider(pod_request(), *args, env={**env, "ECR_KUBELET_EKS_CLUSTER_NAME": variable}), 2)
    assert named in line
    assert stub.calls() == []
