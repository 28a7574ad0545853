"""`ecr-credential-provider diagnose IMAGE [flags]` end to end, against the local AWS stub: what a person
reads for a working, a denied and a foreign image, and for the common failures."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import FAKE_SECRET_ACCESS_KEY
from helpers import StubClient, make_jwt

pytestmark = pytest.mark.e2e

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
OTHER_HOST = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"
ROLE = "arn:aws:iam::210987654321:role/ecr-pull"
SA_ROLE = "arn:aws:iam::444455556666:role/pod"


class Diagnose:
    def __init__(self, provider_cmd: list[str], env: dict[str, str]) -> None:
        self.cmd, self.env = provider_cmd, env

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.cmd, "diagnose", *args], env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=70, check=False)


@pytest.fixture
def diagnose(provider_cmd: list[str], provider_env: dict[str, str]) -> Diagnose:
    return Diagnose(provider_cmd, provider_env)


def lines(result: subprocess.CompletedProcess[str], step: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if line.startswith(step + ":")]


def no_secrets(result: subprocess.CompletedProcess[str], stub: StubClient, *more: str) -> None:
    text = result.stdout + result.stderr
    for secret in [FAKE_SECRET_ACCESS_KEY, *(c["password"] for c in stub.calls() if c["password"]), *more]:
        assert secret not in text
    assert "stubsession-" not in text and "Traceback" not in text


def test_a_working_image_shows_every_decision_and_then_the_cache_hit(diagnose: Diagnose, stub: StubClient) -> None:
    first = diagnose(f"{HOST}/team/app:1.0")
    assert first.returncode == 0, first.stdout + first.stderr
    assert lines(first, "host") == [f"{HOST} is ECR registry 123456789012 in us-east-1 (aws, standard)"]
    assert "the node credentials" in lines(first, "identity")[0]
    assert lines(first, "chain") == ["found by the 'env' provider: long-term credentials, access key id AKIA...MPLE"]
    assert lines(first, "endpoint") == [f"ecr: {stub.url} (override from the environment)"]
    assert "absent: the plugin fetches a new token" in lines(first, "cache")[0]
    assert lines(first, "aws") == ["ecr:GetAuthorizationToken: OK, HTTP 200"]
    [answer] = lines(first, "answer")
    assert answer.startswith(f"credentials for {HOST} (username AWS), cacheDuration 5h59m")
    assert lines(first, "result") == ["OK: a pull would get credentials"]
    second = diagnose(f"{HOST}/team/app")
    assert second.returncode == 0
    assert "fresh" in lines(second, "cache")[0] and lines(second, "aws") == ["no AWS call made"]
    assert lines(second, "token") == ["served from the cache"]
    assert len(stub.calls()) == 1
    no_secrets(first, stub)
    no_secrets(second, stub)


def test_a_denied_image_names_the_aws_error_code_and_the_fix(diagnose: Diagnose, stub: StubClient) -> None:
    stub.configure(deny=True)
    result = diagnose(f"{OTHER_HOST}/app", "--no-cache")
    assert result.returncode == 3, result.stdout
    assert lines(result, "aws") == ["ecr:GetAuthorizationToken: denied: AccessDeniedException, HTTP 400 "
                                    "(User is not authorized to perform GetAuthorizationToken)"]
    assert lines(result, "result")[0].startswith("FAILED (exit 3): ecr:GetAuthorizationToken in eu-west-1 failed")
    assert any("ecr:GetAuthorizationToken (resource *)" in h for h in lines(result, "hint"))
    no_secrets(result, stub)


@pytest.mark.parametrize(("image", "why"), [
    ("ghcr.io/org/app:1", "is not an ECR registry and no --mirror maps it"),
    ("docker.io/library/nginx", "is not an ECR registry"),
    ("12345678901.dkr.ecr.us-east-1.amazonaws.com/app", "looks like ECR but is not an ECR registry host"),
    (f"{HOST}.evil.example/app", "looks like ECR but is not an ECR registry host"),
])
def test_a_foreign_image_correctly_gets_no_credentials(
    diagnose: Diagnose, stub: StubClient, image: str, why: str
) -> None:
    result = diagnose(image)
    assert result.returncode == 0, result.stdout
    assert why in lines(result, "host")[0]
    assert lines(result, "result") == ["OK: no credentials, correctly (empty auth; the kubelet pulls without plugin "
                                       "credentials)"]
    assert stub.calls() == []


def test_a_mapped_registry_role_is_explained_and_its_sts_call_shown(diagnose: Diagnose, stub: StubClient) -> None:
    result = diagnose(f"{OTHER_HOST}/app", "--registry-role", f"210987654321={ROLE}")
    assert result.returncode == 0, result.stdout
    assert lines(result, "identity") == [f"--registry-role maps 210987654321 to {ROLE}: sts:AssumeRole of it with "
                                         "the node credentials, in eu-west-1"]
    assert lines(result, "endpoint")[1] == f"sts: {stub.url} (override from the environment)"
    assert lines(result, "aws") == ["sts:AssumeRole: OK, HTTP 200", "ecr:GetAuthorizationToken: OK, HTTP 200"]
    assert "cacheDuration 29m" in lines(result, "answer")[0]
    no_secrets(result, stub)


def test_service_account_mode_is_explained_without_printing_the_token(
    diagnose: Diagnose, stub: StubClient, tmp_path: Path
) -> None:
    token = make_jwt("system:serviceaccount:team:puller")
    (tmp_path / "token").write_text(token)
    result = diagnose(f"{HOST}/app", "--registry-role", f"123456789012={ROLE}", "--service-account-token-file",
                      str(tmp_path / "token"), "--service-account-annotation",
                      f"eks.amazonaws.com/ecr-role-arn={SA_ROLE}")
    assert result.returncode == 0, result.stdout
    [identity] = lines(result, "identity")
    assert identity.startswith(f"service account system:serviceaccount:team:puller: annotation "
                               f"eks.amazonaws.com/ecr-role-arn = {SA_ROLE}")
    assert lines(result, "aws")[0] == "sts:AssumeRoleWithWebIdentity: OK, HTTP 200"
    no_secrets(result, stub, token, token.split(".")[2])


def test_no_credentials(diagnose: Diagnose, stub: StubClient, provider_env: dict[str, str]) -> None:
    env = {k: v for k, v in provider_env.items() if not k.startswith("AWS_ACCESS") and k != "AWS_SECRET_ACCESS_KEY"}
    result = subprocess.run([*diagnose.cmd, "diagnose", f"{HOST}/app"], env=env, capture_output=True, text=True,
                            timeout=70, check=False)
    assert result.returncode == 3, result.stdout
    assert lines(result, "chain")[0].startswith("no AWS credentials found")
    assert any(h.startswith("no credentials: give the node an instance profile") for h in lines(result, "hint"))
    assert stub.calls() == []


def test_throttling(diagnose: Diagnose, stub: StubClient) -> None:
    # Throttling is retried until the deadline (a booting fleet shares the quota): throttled throughout.
    stub.configure(throttle_next=100000)
    result = diagnose(f"{HOST}/app", "--timeout", "6s")
    assert result.returncode == 4, result.stdout
    calls = lines(result, "aws")
    throttled = "ecr:GetAuthorizationToken: throttled: ThrottlingException, HTTP 400 (Rate exceeded)"
    # Every call made was throttled. On a machine so loaded that the deadline (counted from process
    # start) passed before the first call, none was made: the outcome is the same, exit 4.
    assert set(calls) in ({throttled}, {"no AWS call made"}), calls
    if throttled in calls:
        assert any(h.startswith("throttling: ecr:GetAuthorizationToken is limited") for h in lines(result, "hint"))


def test_clock_skew(diagnose: Diagnose, stub: StubClient) -> None:
    stub.configure(clock_skew=True)
    result = diagnose(f"{HOST}/app")
    assert result.returncode == 3, result.stdout
    assert "InvalidSignatureException" in lines(result, "aws")[0]
    assert any(h.startswith("clock skew:") for h in lines(result, "hint"))


def test_unreachable_endpoint(diagnose: Diagnose, stub: StubClient) -> None:
    result = diagnose(f"{HOST}/app", env={"AWS_ENDPOINT_URL_ECR": "http://127.0.0.1:1", "AWS_MAX_ATTEMPTS": "1"})
    assert result.returncode == 4, result.stdout
    assert lines(result, "aws") == ["ecr:GetAuthorizationToken: network_error: EndpointConnectionError, "
                                    "no HTTP answer"]
    hints = lines(result, "hint")
    assert any(h.startswith("endpoint unreachable:") for h in hints)
    assert any(h.startswith("proxy: none is set") for h in hints)


def test_a_broken_proxy_is_named_without_its_password(diagnose: Diagnose, stub: StubClient) -> None:
    proxy = "http://puller:Pr0xyPassw0rd@127.0.0.1:1"
    result = diagnose(f"{HOST}/app", env={"HTTP_PROXY": proxy, "AWS_MAX_ATTEMPTS": "1"})
    assert result.returncode == 4, result.stdout
    assert lines(result, "proxy") == ["HTTP_PROXY=http://***@127.0.0.1:1"]
    assert "ProxyConnectionError" in lines(result, "aws")[0]
    assert any(h.startswith("proxy: the proxy http://***@127.0.0.1:1 refused") for h in lines(result, "hint"))
    assert "Pr0xyPassw0rd" not in result.stdout + result.stderr


@pytest.mark.parametrize(("name", "proxy", "shown"), [
    ("HTTP_PROXY", "puller:Pr0xyPassw0rd@127.0.0.1:1", "***@127.0.0.1:1"),  # no scheme
    ("http_proxy", "socks5://puller:Pr0xy%40Passw0rd@127.0.0.1:1", "socks5://***@127.0.0.1:1"),
    ("ALL_PROXY", "http://puller:Pr0xyPassw0rd@127.0.0.1:1", "http://***@127.0.0.1:1"),  # botocore ignores it
    ("HTTP_PROXY", "http://puller:Pr0xyPassw0rd@127.0.0.1:99999", "http://***@127.0.0.1:99999"),  # port out of range
])
def test_a_proxy_of_any_form_is_shown_without_its_password_even_at_vv(
    diagnose: Diagnose, stub: StubClient, name: str, proxy: str, shown: str
) -> None:
    result = diagnose(f"{HOST}/app", "-vv", env={name: proxy, "AWS_MAX_ATTEMPTS": "1"})
    assert "Traceback" not in result.stderr, result.stdout + result.stderr
    assert lines(result, "proxy") == [f"{name}={shown}"]
    assert (result.returncode == 0) == (name == "ALL_PROXY"), result.stdout
    assert lines(result, "result")[0].startswith("OK" if name == "ALL_PROXY" else "FAILED")
    assert "Pr0xy" not in result.stdout + result.stderr


@pytest.mark.parametrize("args", [[], ["--registry-role", "nonsense", f"{HOST}/app"], ["--bogus", f"{HOST}/app"]])
def test_bad_usage_is_one_line_and_exit_2(diagnose: Diagnose, stub: StubClient, args: list[str]) -> None:
    result = diagnose(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert stub.calls() == []


@pytest.mark.parametrize("kind", ["not utf-8", "fifo", "endless", "directory", "missing"])
def test_an_unusable_token_file_is_one_line_and_exit_2(
    diagnose: Diagnose, stub: StubClient, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "token"
    if kind == "not utf-8":
        path.write_bytes(b"eyJ\xff\xfe.not-text")
    elif kind == "fifo":
        os.mkfifo(path)  # nobody writes it: opening or reading it must not hang
    elif kind == "endless":
        path = Path("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    result = diagnose(f"{HOST}/app", "--service-account-token-file", str(path))
    assert result.returncode == 2 and result.stdout == "", result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("ecr-credential-provider diagnose: error: --service-account-token-file")
    assert stub.calls() == []


def test_a_denied_registry_role_points_at_the_trust_policy(diagnose: Diagnose, stub: StubClient) -> None:
    stub.configure(deny_assume_role=[ROLE])
    result = diagnose(f"{OTHER_HOST}/app", "--registry-role", f"{OTHER_HOST}={ROLE}")
    assert result.returncode == 3, result.stdout
    assert lines(result, "identity")[0].startswith(f"--registry-role maps {OTHER_HOST} to {ROLE}")
    assert lines(result, "aws") == ["sts:AssumeRole: denied: AccessDenied, HTTP 403 (Not authorized to perform "
                                    "sts:AssumeRole)"]
    assert any(h.startswith("access denied by STS: the role's trust policy must allow the caller")
               for h in lines(result, "hint"))
    assert stub.calls("ecr") == []


@pytest.mark.parametrize(("host", "endpoint"), [
    (HOST, "https://api.ecr.us-east-1.amazonaws.com"),
    ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "https://ecr-fips.us-gov-west-1.amazonaws.com"),
    ("123456789012.dkr-ecr.eu-west-1.on.aws", "https://ecr.eu-west-1.api.aws"),
    ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "https://api.ecr.cn-north-1.amazonaws.com.cn"),
])
def test_the_endpoint_shown_is_the_one_botocore_resolves_for_the_host(
    host: str, endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In process and without any AWS call: only the endpoint resolution runs.
    from ecr_kubelet import diagnose as diag
    from ecr_kubelet.models import Identity
    from ecr_kubelet.options import Options
    from ecr_kubelet.registry import classify_host

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL_STS", *diag.PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    registry = classify_host(host)
    assert registry is not None
    diag._explain_endpoints(registry, Identity(mode="role", role_arn=ROLE), Options(environ={}))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"endpoint:  ecr: {endpoint} ({registry.partition} partition, {registry.variant})"
    assert out[1].startswith("endpoint:  sts: https://sts.")
    assert out[2] == "proxy:     none set (HTTPS_PROXY, NO_PROXY): direct connections"


def test_a_hung_endpoint_ends_at_the_deadline_with_the_diagnosis(diagnose: Diagnose, stub: StubClient) -> None:
    stub.configure(delay_seconds=8)
    started = time.monotonic()
    result = diagnose(f"{HOST}/app", "--timeout", "2s")
    assert result.returncode == 4, result.stdout
    assert time.monotonic() - started < 8  # the deadline ended it, not the stub's answer
    # The outcome, not its wording: that depends on where the deadline fell (during the call, before
    # it on a slow start, or in something that ignores it), and each says so correctly.
    [outcome] = lines(result, "result")
    assert outcome.startswith("FAILED (exit 4): "), outcome
    assert any(h.startswith("endpoint unreachable") for h in lines(result, "hint"))


def test_an_uncacheable_node_identity_is_given_its_own_reason(diagnose: Diagnose, stub: StubClient) -> None:
    result = diagnose(f"{HOST}/team/app", env={"AWS_SECRET_ACCESS_KEY": ""})
    [cache] = lines(result, "cache")
    assert cache.startswith("not cacheable (the node identity cannot be named: AWS_ACCESS_KEY_ID is set without")
    assert "service-account" not in cache


POD_ROLE = "arn:aws:iam::210987654321:role/team-pull"


@pytest.fixture
def pod_identity(stub: StubClient, provider_env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], Path, str]:
    stub.configure(pod_identity_associations={"prod": {"team/puller": POD_ROLE}})
    token = make_jwt("system:serviceaccount:team:puller", aud="pods.eks.amazonaws.com")
    (tmp_path / "token").write_text(token)
    return {"AWS_ENDPOINT_URL_EKS_AUTH": stub.url}, tmp_path / "token", token


def test_pod_identity_explains_the_exchange_without_printing_token_or_keys(
    diagnose: Diagnose, stub: StubClient, pod_identity: tuple[dict[str, str], Path, str]
) -> None:
    env, token_file, token = pod_identity
    result = diagnose(f"{OTHER_HOST}/app", "--eks-cluster-name", "prod", "--service-account-token-file",
                      str(token_file), env=env)
    assert result.returncode == 0, result.stdout
    identity = lines(result, "identity")
    assert identity[0].startswith("service account system:serviceaccount:team:puller: none of the role annotations")
    assert "EKS Pod Identity (--eks-cluster-name prod)" in identity[0]
    assert any("audience pods.eks.amazonaws.com" in line for line in identity)
    assert any(line.startswith("eks-auth: ") for line in lines(result, "endpoint"))
    assert lines(result, "aws")[:2] == ["eks-auth:AssumeRoleForPodIdentity: OK, HTTP 200",
                                        "ecr:GetAuthorizationToken: OK, HTTP 200"]
    [exchange] = lines(result, "exchange")
    assert exchange.startswith("association arn:aws:eks:") and "maps team/puller to the role " in exchange
    assert "assumed-role/team-pull/" in exchange
    [issued] = [c["issued_access_key_id"] for c in stub.calls("eks-auth")]
    no_secrets(result, stub, token, token.split(".")[1], token.split(".")[2], issued)


def test_pod_identity_without_association_says_so(
    diagnose: Diagnose, stub: StubClient, pod_identity: tuple[dict[str, str], Path, str]
) -> None:
    env, token_file, _ = pod_identity
    stub.configure(pod_identity_associations={"prod": {}})  # the same service account, now without association
    result = diagnose(f"{OTHER_HOST}/app", "--eks-cluster-name", "prod", "--service-account-token-file",
                      str(token_file), "--sa-without-role", "fail", env=env)
    assert result.returncode == 3, result.stdout
    assert lines(result, "exchange")[0].startswith("no pod identity association")
    assert any(line.startswith("without an association: fail") for line in lines(result, "identity"))


def test_a_node_denied_by_eks_auth_gets_the_node_policy_hint(
    diagnose: Diagnose, stub: StubClient, pod_identity: tuple[dict[str, str], Path, str]
) -> None:
    env, token_file, _ = pod_identity
    stub.configure(deny_pod_identity=True)
    result = diagnose(f"{OTHER_HOST}/app", "--eks-cluster-name", "prod", "--service-account-token-file",
                      str(token_file), env=env)
    assert result.returncode == 3, result.stdout
    assert any("eks-auth:AssumeRoleForPodIdentity" in hint for hint in lines(result, "hint"))


def test_the_credential_chain_is_resolved_once_by_the_run_it_observes(
    diagnose: Diagnose, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    # diagnose observes the pipeline: a credential_process (or instance metadata) runs once, not twice.
    runs = tmp_path / "runs"
    script = tmp_path / "creds.sh"
    script.write_text(f'#!/bin/sh\necho run >> {runs}\n'
                      'echo \'{"Version":1,"AccessKeyId":"AKIAPROCESSKEY000001","SecretAccessKey":"s"}\'\n')
    script.chmod(0o700)
    config = tmp_path / "config"
    config.write_text(f"[default]\ncredential_process = {script}\n")
    config.chmod(0o600)
    env = {k: v for k, v in provider_env.items() if not k.startswith("AWS_ACCESS") and k != "AWS_SECRET_ACCESS_KEY"}
    result = subprocess.run([*diagnose.cmd, "diagnose", f"{HOST}/app"], env={**env, "AWS_CONFIG_FILE": str(config)},
                            capture_output=True, text=True, timeout=70, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result, "chain") == ["found by the 'custom-process' provider: long-term credentials, "
                                      "access key id AKIA...0001"]
    assert runs.read_text().splitlines() == ["run"]
    # A cache hit resolves nothing, and says so.
    again = subprocess.run([*diagnose.cmd, "diagnose", f"{HOST}/app"], env={**env, "AWS_CONFIG_FILE": str(config)},
                           capture_output=True, text=True, timeout=70, check=False)
    assert again.returncode == 0 and lines(again, "chain") == ["not resolved: the token came from the cache"]
    assert runs.read_text().splitlines() == ["run"]
    assert len(stub.calls()) == 1


def test_the_eks_auth_endpoint_shown_is_in_the_node_region_from_aws_region(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In process, no AWS call: eks-auth is called in the node's region, which AWS_REGION alone may name.
    from ecr_kubelet import diagnose as diag
    from ecr_kubelet.models import Identity, PodIdentity
    from ecr_kubelet.options import Options
    from ecr_kubelet.registry import classify_host

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EKS_AUTH", "AWS_DEFAULT_REGION", "AWS_REGION",
                 *diag.PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    registry = classify_host(HOST)
    assert registry is not None
    identity = Identity(mode="pod-identity", web_identity_token="x.y.z",
                        pod_identity=PodIdentity("my-cluster", "", None))
    diag._explain_endpoints(registry, identity, Options(environ={"AWS_REGION": "eu-west-1"}))
    [eks_auth] = [line for line in capsys.readouterr().out.splitlines() if "eks-auth:" in line]
    assert "eu-west-1" in eks_auth and "us-east-1" not in eks_auth
