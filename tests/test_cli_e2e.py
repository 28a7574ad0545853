"""The installed command (or the built binary) answering kubelet requests against the local stub."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from helpers import API_V1, RunProvider, StubClient, make_jwt, make_request

pytestmark = pytest.mark.e2e

ACCT = "123456789012"
OTHER = "210987654321"
ROLE = "arn:aws:iam::111122223333:role/pull"
STATIC_SECRET = "stubSECRET/DoNotLeak+wJalrXUtnFEMI/K7MDENG"
VERSIONS = [API_V1, "credentialprovider.kubelet.k8s.io/v1beta1", "credentialprovider.kubelet.k8s.io/v1alpha1"]

PRIVATE_HOSTS = {
    f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com": "us-east-1",
    f"{ACCT}.dkr.ecr.cn-north-1.amazonaws.com.cn": "cn-north-1",
    f"{ACCT}.dkr.ecr.us-gov-west-1.amazonaws.com": "us-gov-west-1",
    f"{ACCT}.dkr.ecr.eusc-de-east-1.amazonaws.eu": "eusc-de-east-1",
    f"{ACCT}.dkr.ecr.us-iso-east-1.c2s.ic.gov": "us-iso-east-1",
    f"{ACCT}.dkr.ecr.us-isob-east-1.sc2s.sgov.gov": "us-isob-east-1",
    f"{ACCT}.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk": "eu-isoe-west-1",
    f"{ACCT}.dkr.ecr.us-isof-south-1.csp.hci.ic.gov": "us-isof-south-1",
    f"{ACCT}.dkr.ecr-fips.us-east-1.amazonaws.com": "us-east-1",
    f"{ACCT}.dkr.ecr-fips.us-gov-west-1.amazonaws.com": "us-gov-west-1",
    f"{ACCT}.dkr-ecr.eu-west-1.on.aws": "eu-west-1",
    f"{ACCT}.dkr-ecr-fips.us-east-2.on.aws": "us-east-2",
    f"{ACCT}.dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn": "cn-northwest-1",
}


def ok_response(result: Any) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1
    body: dict[str, Any] = json.loads(result.stdout)
    assert set(body) <= {"kind", "apiVersion", "cacheKeyType", "cacheDuration", "auth"}
    assert body["kind"] == "CredentialProviderResponse" and body["cacheKeyType"] == "Registry"
    return body


def failed(result: Any, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return str(lines[0])


def duration_seconds(text: str) -> int:
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(\d+)s", text)
    assert match, text
    h, m, s = (int(g or 0) for g in match.groups())
    return h * 3600 + m * 60 + s


@pytest.mark.parametrize("host", sorted(PRIVATE_HOSTS))
def test_private_registry_in_every_partition_and_variant(
    run_provider: RunProvider, stub: StubClient, host: str
) -> None:
    body = ok_response(run_provider(make_request(f"{host}/team/app")))
    [call] = stub.calls("ecr")
    assert call["region"] == PRIVATE_HOSTS[host] and call["registry_ids"] == [ACCT]
    assert body["auth"] == {host: {"username": "AWS", "password": call["password"]}}
    # Half of a 12 h token: the refresh point.
    assert 6 * 3600 - 30 <= duration_seconds(body["cacheDuration"]) <= 6 * 3600


@pytest.mark.parametrize("host", ["public.ecr.aws", "ecr-public.aws.com"])
def test_public_ecr(run_provider: RunProvider, stub: StubClient, host: str) -> None:
    body = ok_response(run_provider(make_request(f"{host}/nginx/nginx")))
    [call] = stub.calls("ecr-public")
    assert call["region"] == "us-east-1"
    assert body["auth"] == {host: {"username": "AWS", "password": call["password"]}}


@pytest.mark.parametrize("version", VERSIONS)
def test_answers_in_the_request_version(run_provider: RunProvider, stub: StubClient, version: str) -> None:
    body = ok_response(run_provider(make_request(f"{ACCT}.dkr.ecr.us-west-2.amazonaws.com/app", version)))
    assert body["apiVersion"] == version
    assert list(body["auth"]) == [f"{ACCT}.dkr.ecr.us-west-2.amazonaws.com"]


def test_cross_account_registry_asks_for_that_account(run_provider: RunProvider, stub: StubClient) -> None:
    ok_response(run_provider(make_request(f"{OTHER}.dkr.ecr.eu-central-1.amazonaws.com/app")))
    [call] = stub.calls("ecr")
    assert call["registry_ids"] == [OTHER] and call["region"] == "eu-central-1"


def test_port_and_spelling_are_kept_in_the_auth_key(run_provider: RunProvider, stub: StubClient) -> None:
    host = f"{ACCT}.DKR.ECR.us-east-1.amazonaws.com:443"
    body = ok_response(run_provider(make_request(f"{host}/app")))
    assert list(body["auth"]) == [host]


@pytest.mark.parametrize(
    "image",
    ["docker.io/library/nginx", "gcr.io/project/app", "quay.io/org/app", "localhost:5000/app",
     f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com.evil.example/app", f"1{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app"],
)
def test_foreign_hosts_get_no_credentials(run_provider: RunProvider, stub: StubClient, image: str) -> None:
    body = ok_response(run_provider(make_request(image)))
    assert body["auth"] == {}
    assert stub.calls() == []


def test_mirror_gets_the_ecr_registry_credentials(run_provider: RunProvider, stub: StubClient) -> None:
    target = f"{OTHER}.dkr.ecr.us-west-2.amazonaws.com"
    result = run_provider(make_request("mirror.example.com:5000/team/app"), "--mirror",
                          f"mirror.example.com:5000={target}", "--mirror", f"other.example.com={target}")
    body = ok_response(result)
    [call] = stub.calls("ecr")
    assert call["registry_ids"] == [OTHER] and call["region"] == "us-west-2"
    assert body["auth"] == {"mirror.example.com:5000": {"username": "AWS", "password": call["password"]}}
    # A mirror without the port matches any port of that host.
    body = ok_response(run_provider(make_request("other.example.com:8443/app"), "--mirror",
                                    f"other.example.com={target}"))
    assert list(body["auth"]) == ["other.example.com:8443"]


@pytest.mark.parametrize("spec", ["nohost", "mirror.example.com=", "mirror.example.com=gcr.io",
                                  "=123456789012.dkr.ecr.us-east-1.amazonaws.com"])
def test_bad_mirror_flag(run_provider: RunProvider, stub: StubClient, spec: str) -> None:
    line = failed(run_provider(make_request("mirror.example.com/app"), "--mirror", spec), 2)
    assert "--mirror" in line


def sa_request(sub: str, annotations: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    token = make_jwt(sub)
    annotations = {"eks.amazonaws.com/ecr-role-arn": ROLE} if annotations is None else annotations
    return make_request(f"{OTHER}.dkr.ecr.us-west-2.amazonaws.com/app", serviceAccountToken=token,
                        serviceAccountAnnotations=annotations), token


def test_service_account_mode_assumes_the_annotated_role(run_provider: RunProvider, stub: StubClient) -> None:
    request, _token = sa_request("system:serviceaccount:team:puller")
    body = ok_response(run_provider(request))
    [sts] = stub.calls("sts", "AssumeRoleWithWebIdentity")
    assert sts["role_arn"] == ROLE and sts["web_identity"]["sub"] == "system:serviceaccount:team:puller"
    assert sts["role_session_name"] == "team.puller"
    [ecr] = stub.calls("ecr")
    assert ecr["access_key_id"] == sts["issued_access_key_id"] and ecr["access_key_id"].startswith("ASIA")
    assert ecr["registry_ids"] == [OTHER] and ecr["region"] == "us-west-2"
    assert body["auth"][f"{OTHER}.dkr.ecr.us-west-2.amazonaws.com"]["password"] == ecr["password"]


def test_role_annotation_fallback_key_and_custom_keys(run_provider: RunProvider, stub: StubClient) -> None:
    request, _ = sa_request("system:serviceaccount:a:b", {"eks.amazonaws.com/role-arn": ROLE})
    ok_response(run_provider(request))
    assert stub.calls("sts", "AssumeRoleWithWebIdentity")[0]["role_arn"] == ROLE
    other_role = "arn:aws:iam::444455556666:role/custom"
    request, _ = sa_request("system:serviceaccount:a:c", {"example.com/ecr-role": other_role})
    ok_response(run_provider(request, "--sa-role-annotation", "example.com/ecr-role"))
    assert stub.calls("sts", "AssumeRoleWithWebIdentity")[-1]["role_arn"] == other_role


def test_service_account_without_role_uses_node_credentials_or_fails(
    run_provider: RunProvider, stub: StubClient
) -> None:
    request, _ = sa_request("system:serviceaccount:a:b", {})
    ok_response(run_provider(request))
    assert stub.calls("sts") == []
    assert stub.calls("ecr")[0]["access_key_id"] == "AKIAIOSFODNN7EXAMPLE"
    line = failed(run_provider(request, "--sa-without-role", "fail"), 3)
    assert "role annotation" in line


def test_rejected_web_identity_is_an_auth_failure(run_provider: RunProvider, stub: StubClient) -> None:
    stub.configure(deny_web_identity=True)
    request, token = sa_request("system:serviceaccount:a:b")
    result = run_provider(request, "-vv")
    assert result.returncode == 3 and result.stdout == ""
    assert "AssumeRoleWithWebIdentity" in result.stderr and token not in result.stderr


def test_role_arn_flag_and_env(run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]) -> None:
    image = make_request(f"{OTHER}.dkr.ecr.us-west-2.amazonaws.com/app")
    ok_response(run_provider(image, "--role-arn", ROLE, "--no-cache"))
    ok_response(run_provider(image, "--no-cache", env={**provider_env, "AWS_ECR_ROLE_ARN": ROLE}))
    assume = stub.calls("sts", "AssumeRole")
    assert [c["role_arn"] for c in assume] == [ROLE, ROLE]
    assert all(c["access_key_id"] == "AKIAIOSFODNN7EXAMPLE" and c["region"] == "us-west-2" for c in assume)
    assert [c["access_key_id"] for c in stub.calls("ecr")] == [c["issued_access_key_id"] for c in assume]
    failed(run_provider(image, "--role-arn", "not-an-arn"), 2)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"", "empty request"),
        (json.dumps(make_request("x.example/app")).encode() + b" garbage", "trailing data"),
        (json.dumps({**make_request("x.example/app"), "kind": "Pod"}).encode(), "kind must be"),
        (json.dumps(make_request("x.example/app", "credentialprovider.kubelet.k8s.io/v2")).encode(),
         "apiVersion must be"),
        (json.dumps({"kind": "CredentialProviderRequest", "apiVersion": API_V1}).encode(), "image"),
        (json.dumps(make_request("https://x.example/app")).encode(), "URL scheme"),
        (json.dumps(make_request("bad host.example/app")).encode(), "whitespace"),
        (b'{"kind":"CredentialProviderRequest","image":"' + b"a" * (1024 * 1024) + b'"}', "larger than"),
    ],
)
def test_bad_input(run_provider: RunProvider, stub: StubClient, raw: bytes, fragment: str) -> None:
    line = failed(run_provider(raw), 2)
    assert line.startswith("ecr-credential-provider: error: ") and fragment in line
    assert stub.calls() == []


def test_access_denied_and_missing_credentials(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    image = make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")
    stub.configure(deny=True)
    assert "AccessDeniedException" in failed(run_provider(image), 3)
    env = {k: v for k, v in provider_env.items() if not k.startswith("AWS_ACCESS_KEY") and "SECRET" not in k}
    assert "credentials" in failed(run_provider(image, env=env), 3)


def test_throttling_is_retried(run_provider: RunProvider, stub: StubClient) -> None:
    stub.configure(throttle_next=3)
    body = ok_response(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")))
    calls = stub.calls("ecr")
    assert [c["status"] for c in calls] == [400, 400, 400, 200]
    assert body["auth"][f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com"]["password"] == calls[-1]["password"]


def test_outage_without_cache_is_unavailable(run_provider: RunProvider, stub: StubClient) -> None:
    stub.configure(fail_all=True)
    line = failed(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")), 4)
    assert "ServiceUnavailable" in line


def test_deadline_bounds_the_run(run_provider: RunProvider, stub: StubClient) -> None:
    stub.configure(delay_seconds=8)
    started = time.monotonic()
    line = failed(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app"), "--timeout", "2s"), 4)
    assert time.monotonic() - started < 7
    assert "did not answer in time" in line


def test_malformed_token_is_a_clear_error(run_provider: RunProvider, stub: StubClient) -> None:
    stub.configure(malformed_token=True)
    line = failed(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")), 1)
    assert "not valid base64" in line


@pytest.mark.parametrize(
    ("settings", "expected"),
    [({"omit_expires_at": True}, "0s"), ({"expires_at": 1_000_000_000}, "0s"),
     ({"token_lifetime_seconds": 120}, "0s")],
)
def test_cache_duration_when_expiry_is_missing_past_or_close(
    run_provider: RunProvider, stub: StubClient, settings: dict[str, Any], expected: str
) -> None:
    stub.configure(**settings)
    body = ok_response(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")))
    assert body["cacheDuration"] == expected and body["auth"]


def test_refresh_fraction_flag(run_provider: RunProvider, stub: StubClient) -> None:
    body = ok_response(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app"),
                                    "--refresh-fraction", "1"))
    # Never beyond expiry minus the 5 minute margin.
    assert 12 * 3600 - 300 - 30 <= duration_seconds(body["cacheDuration"]) <= 12 * 3600 - 300
    failed(run_provider(make_request("x.example/app"), "--refresh-fraction", "0"), 2)


def test_public_ecr_outside_the_aws_partition_is_anonymous(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    env = {**provider_env, "AWS_DEFAULT_REGION": "us-gov-west-1"}
    result = run_provider(make_request("public.ecr.aws/nginx/nginx"), env=env)
    body = ok_response(result)
    assert body["auth"] == {} and body["cacheDuration"] == "1h0m0s" and stub.calls() == []
    assert "aws-us-gov" in result.stderr


def test_public_ecr_access_denied_is_a_visible_failure(run_provider: RunProvider, stub: StubClient) -> None:
    # Exit non-zero so the kubelet logs why and caches nothing; it still pulls anonymously.
    stub.configure(deny=True)
    line = failed(run_provider(make_request("public.ecr.aws/nginx/nginx")), 3)
    assert "ecr-public:GetAuthorizationToken" in line and "AccessDeniedException" in line


def test_moto_server(run_provider: RunProvider, moto: str, provider_env: dict[str, str]) -> None:
    env = {**provider_env, "AWS_ENDPOINT_URL_ECR": moto, "AWS_ENDPOINT_URL_STS": moto}
    request, _ = sa_request("system:serviceaccount:team:puller")
    body = ok_response(run_provider(request, env=env))
    [(host, auth)] = body["auth"].items()
    assert host == f"{OTHER}.dkr.ecr.us-west-2.amazonaws.com" and auth["username"] == "AWS" and auth["password"]
    assert body["cacheDuration"] == "0s"  # moto's expiresAt is a fixed date in 2015


def test_klog_verbosity_flag(run_provider: RunProvider, stub: StubClient) -> None:
    request = make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")
    assert "INFO" in run_provider(request, "--v=2").stderr
    assert "DEBUG" in run_provider(request, "--v", "4", "--no-cache").stderr
    assert run_provider(request, "--v=0").stderr == ""


def test_version_flag(run_provider: RunProvider) -> None:
    result = run_provider(b"", "--version")
    assert result.returncode == 0
    assert re.fullmatch(r"ecr-credential-provider \d+\.\d+\.\d+\S* \(commit \S+\)\n", result.stdout)


def test_no_secret_reaches_stderr_at_full_verbosity(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    outputs: list[str] = []
    sa, token = sa_request("system:serviceaccount:team:puller")
    for args, request in [
        (("-vv",), make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")),
        (("-vv", "--role-arn", ROLE), make_request(f"{OTHER}.dkr.ecr.eu-west-1.amazonaws.com/app")),
        (("-vv",), sa),
        (("-vv",), make_request("public.ecr.aws/nginx/nginx")),
    ]:
        result = run_provider(request, *args)
        ok_response(result)
        outputs.append(result.stderr)
        outputs.append(run_provider(request, *args).stderr)  # the cache-hit path too
    stub.configure(deny=True)
    outputs.append(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-2.amazonaws.com/app"), "-vv").stderr)
    stub.configure(deny=False, deny_web_identity=True)
    outputs.append(run_provider(sa_request("system:serviceaccount:x:y")[0], "-vv").stderr)
    stderr = "\n".join(outputs)
    assert "INFO" in stderr and "DEBUG" in stderr  # we did log at full verbosity
    secrets = [STATIC_SECRET, token, *token.split("."), "QVdTO"]  # QVdTO: base64 of "AWS:"
    secrets += [c["password"] for c in stub.calls() if c.get("password")]
    for secret in secrets:
        assert secret not in stderr
    assert "stubpw-" not in stderr and "stubsession-" not in stderr
    # STS-issued secret keys are random 40-character strings: nothing of that shape may appear.
    assert not re.search(r"[A-Za-z0-9_+/=-]{40,}", stderr), stderr
