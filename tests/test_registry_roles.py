"""Per-registry roles (`--registry-role REGISTRY=ROLE_ARN`, env ECR_KUBELET_REGISTRY_ROLES) end to end:
the installed command (or the built binary) against the local AWS stub's STS and ECR."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ecr_kubelet.durations import parse_go_duration
from helpers import RunProvider, StubClient, install_docker_helper, make_jwt, make_request

pytestmark = pytest.mark.e2e

NODE_ACCT = "123456789012"
PROD = "210987654321"
DEV = "333344445555"
PROD_HOST = f"{PROD}.dkr.ecr.eu-west-1.amazonaws.com"
PROD_HOST_2 = f"{PROD}.dkr.ecr.us-west-2.amazonaws.com"
DEV_HOST = f"{DEV}.dkr.ecr.ap-southeast-2.amazonaws.com"
NODE_HOST = f"{NODE_ACCT}.dkr.ecr.us-east-1.amazonaws.com"
PROD_ROLE = "arn:aws:iam::210987654321:role/ecr-pull"
DEV_ROLE = "arn:aws:iam::333344445555:role/ecr-pull-dev"
OTHER_ROLE = "arn:aws:iam::210987654321:role/another"
NODE_ROLE = "arn:aws:iam::123456789012:role/node-hop"
SA_ROLE = "arn:aws:iam::444455556666:role/pod"
MAPPING = ("--registry-role", f"{PROD}={PROD_ROLE}", "--registry-role", f"{DEV_HOST}={DEV_ROLE}")


def password(result: subprocess.CompletedProcess[str], host: str) -> str:
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert list(body["auth"]) == [host]
    secret: str = body["auth"][host]["password"]
    return secret


def cache_seconds(result: subprocess.CompletedProcess[str]) -> float:
    return parse_go_duration(json.loads(result.stdout)["cacheDuration"])


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def assume_calls(stub: StubClient) -> list[dict[str, Any]]:
    return stub.calls("sts", "AssumeRole")


def test_each_mapped_registry_gets_its_token_from_its_role_and_others_keep_the_node_identity(
    run_provider: RunProvider, stub: StubClient
) -> None:
    prod = password(run_provider(make_request(f"{PROD_HOST}/team/app"), *MAPPING), PROD_HOST)
    dev = password(run_provider(make_request(f"{DEV_HOST}/team/app"), *MAPPING), DEV_HOST)
    node = password(run_provider(make_request(f"{NODE_HOST}/team/app"), *MAPPING), NODE_HOST)
    prod_sts, dev_sts = assume_calls(stub)
    # STS is called with the node identity, in the registry's own region.
    assert prod_sts["role_arn"] == PROD_ROLE and prod_sts["region"] == "eu-west-1"
    assert dev_sts["role_arn"] == DEV_ROLE and dev_sts["region"] == "ap-southeast-2"
    assert prod_sts["access_key_id"] == dev_sts["access_key_id"] == "AKIAIOSFODNN7EXAMPLE"
    prod_ecr, dev_ecr, node_ecr = stub.calls("ecr")
    assert prod_ecr["access_key_id"] == prod_sts["issued_access_key_id"] and prod_ecr["registry_ids"] == [PROD]
    assert dev_ecr["access_key_id"] == dev_sts["issued_access_key_id"] and dev_ecr["region"] == "ap-southeast-2"
    assert node_ecr["access_key_id"] == "AKIAIOSFODNN7EXAMPLE"
    assert (prod, dev, node) == (prod_ecr["password"], dev_ecr["password"], node_ecr["password"])


def test_an_account_mapping_covers_every_region_and_a_host_mapping_wins_over_it(
    run_provider: RunProvider, stub: StubClient
) -> None:
    args = ("--registry-role", f"{PROD}={PROD_ROLE}", "--registry-role", f"{PROD_HOST_2}={OTHER_ROLE}")
    password(run_provider(make_request(f"{PROD_HOST}/app"), *args), PROD_HOST)
    password(run_provider(make_request(f"{PROD_HOST_2}/app"), *args), PROD_HOST_2)
    assert [c["role_arn"] for c in assume_calls(stub)] == [PROD_ROLE, OTHER_ROLE]


def test_an_account_mapping_does_not_reach_that_account_id_in_another_partition(
    run_provider: RunProvider, stub: StubClient
) -> None:
    host = f"{PROD}.dkr.ecr.cn-north-1.amazonaws.com.cn"
    password(run_provider(make_request(f"{host}/app"), *MAPPING), host)
    assert assume_calls(stub) == []
    [ecr] = stub.calls("ecr")
    assert ecr["access_key_id"] == "AKIAIOSFODNN7EXAMPLE"


def test_a_cache_hit_makes_no_sts_call_and_tokens_are_never_shared_across_roles(
    run_provider: RunProvider, stub: StubClient
) -> None:
    first = password(run_provider(make_request(f"{PROD_HOST}/a"), *MAPPING), PROD_HOST)
    again = password(run_provider(make_request(f"{PROD_HOST}/b"), *MAPPING), PROD_HOST)
    assert again == first and len(assume_calls(stub)) == 1 and len(stub.calls("ecr")) == 1
    # Another role for the same registry, and the node identity itself, each get their own token.
    other = password(run_provider(make_request(f"{PROD_HOST}/a"), "--registry-role", f"{PROD}={OTHER_ROLE}"),
                     PROD_HOST)
    node = password(run_provider(make_request(f"{PROD_HOST}/a")), PROD_HOST)
    assert len({first, other, node}) == 3
    assert [c["role_arn"] for c in assume_calls(stub)] == [PROD_ROLE, OTHER_ROLE]
    assert stub.calls("ecr")[-1]["access_key_id"] == "AKIAIOSFODNN7EXAMPLE"
    # And each is a hit for its own identity afterwards.
    assert password(run_provider(make_request(f"{PROD_HOST}/c"), "--registry-role", f"{PROD}={OTHER_ROLE}"),
                    PROD_HOST) == other
    assert len(stub.calls()) == 5


def test_cache_duration_respects_the_assumed_credentials_shorter_life(
    run_provider: RunProvider, stub: StubClient
) -> None:
    # The stub's STS credentials live 1 h, its ECR tokens 12 h: the token dies with the credentials,
    # so the refresh point is half of 1 h (not of 12 h), and nothing is handed out past 1 h - margin.
    mapped = run_provider(make_request(f"{PROD_HOST}/app"), *MAPPING)
    assert 30 * 60 - 30 <= cache_seconds(mapped) <= 30 * 60
    hit = run_provider(make_request(f"{PROD_HOST}/app"), *MAPPING)
    assert cache_seconds(hit) <= 30 * 60 and len(stub.calls("ecr")) == 1
    whole = run_provider(make_request(f"{PROD_HOST}/app"), "--refresh-fraction", "1", "--no-cache", *MAPPING)
    assert 55 * 60 - 30 <= cache_seconds(whole) <= 55 * 60  # 1 h minus the 5 min margin
    node = run_provider(make_request(f"{NODE_HOST}/app"), *MAPPING)
    assert cache_seconds(node) >= 6 * 3600 - 30


def one_line_failure(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("expires_in", [-60, 0, 120, 299])
def test_a_token_capped_by_credentials_expired_or_within_the_margin_is_never_handed_out(
    run_provider: RunProvider, stub: StubClient, expires_in: int
) -> None:
    # STS hands out credentials that are already expired, or expire inside the 5 minute margin: the
    # token dies with them, so the answer would be a dead (or nearly dead) password.
    stub.configure(credentials_expire_at=time.time() + expires_in)
    line = one_line_failure(run_provider(make_request(f"{PROD_HOST}/app"), *MAPPING), 1)
    assert "--expiry-margin 5m0s" in line and "not handed out" in line
    assert len(stub.calls("ecr")) == 1
    # Nothing was cached: the next run asks again (and, with credentials that live, answers).
    stub.configure(credentials_expire_at=None)
    password(run_provider(make_request(f"{PROD_HOST}/app"), *MAPPING), PROD_HOST)
    assert len(stub.calls("ecr")) == 2


def test_the_expiry_margin_flag_decides_what_is_too_close(run_provider: RunProvider, stub: StubClient) -> None:
    stub.configure(credentials_expire_at=time.time() + 600)
    one_line_failure(run_provider(make_request(f"{PROD_HOST}/app"), "--expiry-margin", "15m", *MAPPING), 1)
    answered = run_provider(make_request(f"{PROD_HOST}/app"), "--expiry-margin", "1m", *MAPPING)
    password(answered, PROD_HOST)
    assert 0 < cache_seconds(answered) <= 300  # half of the 10 minutes left


def test_the_docker_helper_never_hands_out_an_expired_token_either(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient, tmp_path: Path
) -> None:
    helper = install_docker_helper(provider_cmd, tmp_path / "bin")
    stub.configure(credentials_expire_at=time.time() - 60)
    env = {**provider_env, "ECR_KUBELET_REGISTRY_ROLES": f"{PROD}={PROD_ROLE}"}
    result = subprocess.run([str(helper), "get"], input=PROD_HOST, env=env, capture_output=True, text=True,
                            timeout=70, check=False)
    assert result.returncode == 1 and result.stdout.count("\n") == 1 and "not handed out" in result.stdout


def test_with_role_arn_the_registry_role_is_assumed_from_it(run_provider: RunProvider, stub: StubClient) -> None:
    password(run_provider(make_request(f"{PROD_HOST}/app"), "--role-arn", NODE_ROLE, *MAPPING), PROD_HOST)
    hop, registry_role = assume_calls(stub)
    assert hop["role_arn"] == NODE_ROLE and hop["access_key_id"] == "AKIAIOSFODNN7EXAMPLE"
    assert registry_role["role_arn"] == PROD_ROLE and registry_role["access_key_id"] == hop["issued_access_key_id"]
    [ecr] = stub.calls("ecr")
    assert ecr["access_key_id"] == registry_role["issued_access_key_id"]
    # A registry without a mapping keeps --role-arn alone.
    password(run_provider(make_request(f"{NODE_HOST}/app"), "--role-arn", NODE_ROLE, *MAPPING), NODE_HOST)
    assert [c["role_arn"] for c in assume_calls(stub)][2:] == [NODE_ROLE]


def test_service_account_mode_still_wins_for_a_pod_with_a_role_annotation(
    run_provider: RunProvider, stub: StubClient
) -> None:
    request = make_request(f"{PROD_HOST}/app", serviceAccountToken=make_jwt("system:serviceaccount:t:p"),
                           serviceAccountAnnotations={"eks.amazonaws.com/ecr-role-arn": SA_ROLE})
    password(run_provider(request, *MAPPING), PROD_HOST)
    [web] = stub.calls("sts", "AssumeRoleWithWebIdentity")
    assert web["role_arn"] == SA_ROLE and assume_calls(stub) == []
    # A pod token without the annotation falls back to the node identity, and so to the registry role.
    plain = make_request(f"{PROD_HOST}/app", serviceAccountToken=make_jwt("system:serviceaccount:t:q"))
    password(run_provider(plain, *MAPPING), PROD_HOST)
    assert [c["role_arn"] for c in assume_calls(stub)] == [PROD_ROLE]


def test_a_denied_registry_role_is_an_auth_failure(run_provider: RunProvider, stub: StubClient) -> None:
    stub.configure(deny_assume_role=[PROD_ROLE])
    result = run_provider(make_request(f"{PROD_HOST}/app"), *MAPPING)
    assert result.returncode == 3 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "sts:AssumeRole for registry role" in line and "AccessDenied" in line
    assert stub.calls("ecr") == []


@pytest.mark.parametrize(("spec", "fragment"), [
    ("210987654321", "expected REGISTRY=ROLE_ARN"),
    (f"{PROD}=", "expected REGISTRY=ROLE_ARN"),
    (f"={PROD_ROLE}", "expected REGISTRY=ROLE_ARN"),
    (f"{PROD}=arn:aws:iam::210987654321:user/bob", "is not an IAM role ARN"),
    (f"21098765432={PROD_ROLE}", "neither a 12-digit account id nor an ECR registry host"),
    (f"registry.example.com={PROD_ROLE}", "neither a 12-digit account id nor an ECR registry host"),
    (f"{PROD_HOST}.evil.example={PROD_ROLE}", "neither a 12-digit account id nor an ECR registry host"),
    (f"{PROD}.dkr.ecr.cn-north-1.amazonaws.com.cn={PROD_ROLE}", "the role is in partition aws"),
])
def test_a_malformed_registry_role_is_a_usage_error(
    run_provider: RunProvider, stub: StubClient, spec: str, fragment: str
) -> None:
    line = usage_error(run_provider(make_request(f"{PROD_HOST}/app"), "--registry-role", spec))
    assert fragment in line and line.startswith("ecr-credential-provider: error: --registry-role")
    assert stub.calls() == []


def test_two_roles_for_one_registry_is_a_usage_error(run_provider: RunProvider, stub: StubClient) -> None:
    line = usage_error(run_provider(make_request(f"{PROD_HOST}/app"), "--registry-role", f"{PROD}={PROD_ROLE}",
                                    "--registry-role", f"{PROD}={OTHER_ROLE}"))
    assert "mapped to two different roles" in line and stub.calls() == []


def test_roles_from_the_environment_and_a_flag_wins_over_it(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    env = {**provider_env, "ECR_KUBELET_REGISTRY_ROLES": f"{PROD}={OTHER_ROLE}; {DEV_HOST}={DEV_ROLE}"}
    password(run_provider(make_request(f"{DEV_HOST}/app"), env=env), DEV_HOST)
    password(run_provider(make_request(f"{PROD_HOST}/app"), "--registry-role", f"{PROD}={PROD_ROLE}", env=env),
             PROD_HOST)
    assert [c["role_arn"] for c in assume_calls(stub)] == [DEV_ROLE, PROD_ROLE]
    line = usage_error(run_provider(make_request(f"{PROD_HOST}/app"),
                                    env={**provider_env, "ECR_KUBELET_REGISTRY_ROLES": "nonsense"}))
    assert "ECR_KUBELET_REGISTRY_ROLES 'nonsense': expected REGISTRY=ROLE_ARN" in line


def test_the_docker_helper_honours_the_roles_from_its_environment(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient, tmp_path: Path
) -> None:
    helper = install_docker_helper(provider_cmd, tmp_path / "bin")

    def get(server: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(helper), "get"], input=server, env=env, capture_output=True, text=True,
                              timeout=70, check=False)

    env = {**provider_env, "ECR_KUBELET_REGISTRY_ROLES": f"{DEV_HOST}={DEV_ROLE},{PROD}={PROD_ROLE}"}
    result = get(f"https://{PROD_HOST}", env)
    assert result.returncode == 0, result.stdout
    [sts] = assume_calls(stub)
    [ecr] = stub.calls("ecr")
    assert sts["role_arn"] == PROD_ROLE and ecr["access_key_id"] == sts["issued_access_key_id"]
    assert json.loads(result.stdout)["Secret"] == ecr["password"]
    bad = get(PROD_HOST, {**provider_env, "ECR_KUBELET_REGISTRY_ROLES": f"{PROD}=nope"})
    assert bad.returncode == 2 and bad.stdout.count("\n") == 1
    assert bad.stdout.startswith("docker-credential-ecr-login: environment: ECR_KUBELET_REGISTRY_ROLES")
    assert len(stub.calls()) == 2


def test_no_secret_of_the_assumed_role_reaches_stderr(run_provider: RunProvider, stub: StubClient) -> None:
    result = run_provider(make_request(f"{PROD_HOST}/app"), "-vv", *MAPPING)
    secret = password(result, PROD_HOST)
    assert secret not in result.stderr and "stubSECRET" not in result.stderr
    assert "stubsession-" not in result.stderr
    assert f"assuming registry role {PROD_ROLE}" in result.stderr


def _validate(tmp_path: Path, args: list[str],
              env: list[dict[str, str]] | None = None) -> subprocess.CompletedProcess[str]:

    provider: dict[str, Any] = {
        "name": "ecr-credential-provider", "matchImages": ["*.dkr.ecr.*.amazonaws.com"],
        "defaultCacheDuration": "12h", "apiVersion": "credentialprovider.kubelet.k8s.io/v1", "args": args,
    }
    if env is not None:
        provider["env"] = env
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig",
                                "providers": [provider]}))
    script = Path(sys.executable).parent / "ecr-credential-provider"
    return subprocess.run([str(script), "validate-config", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_validate_config_accepts_good_registry_roles_and_names_each_bad_one(tmp_path: Path) -> None:
    good = _validate(tmp_path, ["--registry-role", f"{PROD}={PROD_ROLE}", f"--registry-role={DEV_HOST}={DEV_ROLE}"],
                     [{"name": "ECR_KUBELET_REGISTRY_ROLES", "value": f"{NODE_ACCT}={NODE_ROLE}"}])
    assert good.returncode == 0, good.stderr
    bad = _validate(tmp_path, ["-v", "--registry-role", f"{PROD}=not-a-role",
                               f"--registry-role=example.com={PROD_ROLE}"],
                    [{"name": "ECR_KUBELET_REGISTRY_ROLES", "value": "oops"}])
    assert bad.returncode == 1
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3, bad.stderr
    assert errors[0].startswith("error: providers[0].args[1]: --registry-role") and "not an IAM role ARN" in errors[0]
    assert errors[1].startswith("error: providers[0].args[3]:") and "neither a 12-digit" in errors[1]
    assert errors[2].startswith("error: providers[0].env: ECR_KUBELET_REGISTRY_ROLES 'oops'")


def test_public_ecr_can_be_mapped_by_its_host(run_provider: RunProvider, stub: StubClient) -> None:
    password(run_provider(make_request("public.ecr.aws/nginx/nginx"), "--registry-role",
                          f"public.ecr.aws={PROD_ROLE}", "--registry-role", f"{PROD}={OTHER_ROLE}"), "public.ecr.aws")
    [sts] = assume_calls(stub)
    [public] = stub.calls("ecr-public")
    assert sts["role_arn"] == PROD_ROLE and sts["region"] == "us-east-1"
    assert public["access_key_id"] == sts["issued_access_key_id"]
