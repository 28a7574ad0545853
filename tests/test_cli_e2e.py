"""The installed command (or the built binary) answering kubelet requests against the local stub."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
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
    f"{ACCT}.dkr.ecr.xx-newland-1.amazonaws.com": "xx-newland-1",  # a region under a prefix not yet opened
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
    started = time.time()
    body = ok_response(run_provider(make_request(f"{host}/team/app")))
    took = time.time() - started
    [call] = stub.calls("ecr")
    assert call["region"] == PRIVATE_HOSTS[host] and call["registry_ids"] == [ACCT]
    assert body["auth"] == {host: {"username": "AWS", "password": call["password"]}}
    # Half of a 12 h token: the refresh point.
    assert 6 * 3600 - took - 1 <= duration_seconds(body["cacheDuration"]) <= 6 * 3600


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
    body = ok_response(run_provider(make_request("Other.Example.com/app"), "--mirror", f"other.example.com={target}"))
    assert list(body["auth"]) == ["Other.Example.com"]


@pytest.mark.parametrize(
    ("image", "spec"),
    [("other.example.com:8443/app", "other.example.com"), ("other.example.com/app", "other.example.com:8443"),
     ("other.example.com:8443/app", "other.example.com:443")],
)
def test_a_mirror_answers_only_for_its_exact_host_and_port(
    run_provider: RunProvider, stub: StubClient, image: str, spec: str
) -> None:
    # The kubelet never matches a key with a port to an image without one, nor the reverse.
    target = f"{OTHER}.dkr.ecr.us-west-2.amazonaws.com"
    body = ok_response(run_provider(make_request(image), "--mirror", f"{spec}={target}"))
    assert body["auth"] == {} and stub.calls() == []


@pytest.mark.parametrize("spec", ["nohost", "mirror.example.com=", "mirror.example.com=gcr.io",
                                  "=123456789012.dkr.ecr.us-east-1.amazonaws.com",
                                  "mirror.example.com/team=123456789012.dkr.ecr.us-east-1.amazonaws.com",
                                  "mirror.example.com:5000/=123456789012.dkr.ecr.us-east-1.amazonaws.com",
                                  "https://mirror.example.com=123456789012.dkr.ecr.us-east-1.amazonaws.com",
                                  "user@mirror.example.com=123456789012.dkr.ecr.us-east-1.amazonaws.com",
                                  "mirror.example.com=123456789012.dkr.ecr.us-east-1.amazonaws.com/x",
                                  "[::1]:5000=123456789012.dkr.ecr.us-east-1.amazonaws.com",
                                  "mirror.example.com:99999=123456789012.dkr.ecr.us-east-1.amazonaws.com",
                                  "bad_host.example=123456789012.dkr.ecr.us-east-1.amazonaws.com",
                                  " mirror.example.com=123456789012.dkr.ecr.us-east-1.amazonaws.com"])
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
    assert time.monotonic() - started < 8  # the deadline ended it, not the stub's answer
    # The outcome, not its wording: that depends on where the deadline fell (during the call, before
    # it on a slow start, or in something that ignores it), and each says so correctly.
    assert ": gave up after 2s: " in line, line
    # the one attempt ended at the deadline: it was not retried after its read timeout
    assert len(stub.calls("ecr")) <= 1


def test_malformed_token_is_a_clear_error(run_provider: RunProvider, stub: StubClient) -> None:
    stub.configure(malformed_token=True)
    line = failed(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")), 1)
    assert "not valid base64" in line


def test_a_token_without_expiry_is_handed_out_for_0s(run_provider: RunProvider, stub: StubClient) -> None:
    stub.configure(omit_expires_at=True)
    body = ok_response(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")))
    assert body["cacheDuration"] == "0s" and body["auth"]


def test_a_token_within_the_expiry_margin_is_never_handed_out(run_provider: RunProvider, stub: StubClient) -> None:
    # --expiry-margin's promise (5 min by default): a token living 2 minutes is refused, not answered for 0s.
    stub.configure(token_lifetime_seconds=120)
    line = failed(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")), 1)
    assert "--expiry-margin 5m0s" in line and "not handed out" in line
    body = ok_response(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app"), "--expiry-margin",
                                    "1m"))
    assert body["auth"] and 0 < duration_seconds(body["cacheDuration"]) <= 60


@pytest.mark.parametrize(
    ("expires_in", "fragment"), [(-3600, "has already expired"), (0, "has already expired"),
                                 (13 * 3600, "more than 12 hours"), (1e11, "more than 12 hours"),
                                 (1e300, "unexpected RuntimeError")],
)
def test_an_expiry_no_ecr_token_can_have_is_an_error(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], expires_in: float, fragment: str
) -> None:
    stub.configure(expires_at=time.time() + expires_in)
    line = failed(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")), 1)
    assert fragment in line
    cache = Path(provider_env["ECR_KUBELET_CACHE_DIR"])
    assert not list(cache.glob("*.json"))


def test_refresh_fraction_flag(run_provider: RunProvider, stub: StubClient) -> None:
    started = time.time()
    body = ok_response(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app"),
                                    "--refresh-fraction", "1"))
    took = time.time() - started
    # Never beyond expiry minus the 5 minute margin.
    assert 12 * 3600 - 300 - took - 1 <= duration_seconds(body["cacheDuration"]) <= 12 * 3600 - 300
    failed(run_provider(make_request("x.example/app"), "--refresh-fraction", "0"), 2)


def test_public_ecr_outside_the_aws_partition_is_anonymous(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    env = {**provider_env, "AWS_DEFAULT_REGION": "us-gov-west-1"}
    result = run_provider(make_request("public.ecr.aws/nginx/nginx"), env=env)
    body = ok_response(result)
    assert body["auth"] == {} and body["cacheDuration"] == "1h0m0s" and stub.calls() == []
    assert "aws-us-gov" in result.stderr


@pytest.mark.parametrize(("region", "default_region", "anonymous"), [
    ("us-gov-west-1", None, True),  # AWS_REGION alone counts (the README's air-gapped advice sets only it)
    ("cn-north-1", "us-east-1", True),  # AWS_REGION wins over AWS_DEFAULT_REGION, as in AWS SDKs
    ("us-east-1", "us-gov-west-1", False),
    ("", "us-gov-west-1", True),  # an empty AWS_REGION is unset
])
def test_public_ecr_partition_follows_aws_region_first(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], region: str,
    default_region: str | None, anonymous: bool,
) -> None:
    env = {key: value for key, value in provider_env.items() if key != "AWS_DEFAULT_REGION"}
    env["AWS_REGION"] = region
    if default_region is not None:
        env["AWS_DEFAULT_REGION"] = default_region
    body = ok_response(run_provider(make_request("public.ecr.aws/nginx/nginx"), env=env))
    if anonymous:
        assert body["auth"] == {} and body["cacheDuration"] == "1h0m0s" and stub.calls() == []
    else:
        assert list(body["auth"]) == ["public.ecr.aws"] and stub.calls("ecr-public")


def test_public_ecr_access_denied_is_a_visible_failure(run_provider: RunProvider, stub: StubClient) -> None:
    # Exit non-zero so the kubelet logs why and caches nothing; it still pulls anonymously.
    stub.configure(deny=True)
    line = failed(run_provider(make_request("public.ecr.aws/nginx/nginx")), 3)
    assert "ecr-public:GetAuthorizationToken" in line and "AccessDeniedException" in line


def test_moto_server(run_provider: RunProvider, moto: str, provider_env: dict[str, str]) -> None:
    env = {**provider_env, "AWS_ENDPOINT_URL_ECR": moto, "AWS_ENDPOINT_URL_STS": moto}
    request, _ = sa_request("system:serviceaccount:team:puller")
    # Through moto's STS and ECR with the assumed role; moto's tokens carry a fixed expiry in 2015.
    line = failed(run_provider(request, env=env), 1)
    assert "ecr:GetAuthorizationToken in us-west-2 returned a token that has already expired" in line
    assert "2015-01-01" in line


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


# ---- odd paths: never the working directory ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "extra_env", "name"),
    [(("--cache-dir", ""), {}, "--cache-dir"), (("--cache-dir", "rel/cache"), {}, "--cache-dir"),
     (("--cache-dir=.",), {}, "--cache-dir"), ((), {"ECR_KUBELET_CACHE_DIR": ""}, "ECR_KUBELET_CACHE_DIR"),
     ((), {"ECR_KUBELET_CACHE_DIR": "cache"}, "ECR_KUBELET_CACHE_DIR")],
    ids=["flag-empty", "flag-relative", "flag-dot", "env-empty", "env-relative"],
)
def test_empty_or_relative_cache_dir_is_a_usage_error_and_touches_nothing(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient, tmp_path: Path,
    args: tuple[str, ...], extra_env: dict[str, str], name: str,
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir(mode=0o755)
    workdir.chmod(0o755)
    proc = subprocess.run([*provider_cmd, *args], input=json.dumps(make_request(f"{ACCT}.dkr.ecr.us-east-1."
                          "amazonaws.com/app")).encode(), env={**provider_env, **extra_env}, cwd=workdir,
                          capture_output=True, timeout=60, check=False)
    line = failed(subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                              proc.stderr.decode()), 2)
    assert name in line and "absolute path" in line
    assert list(workdir.iterdir()) == [] and (workdir.stat().st_mode & 0o777) == 0o755
    assert stub.calls() == []


# ---- one clean line for every bad input -------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000, b"{" + b'"a":{' * 50_000, b'{"kind":"CredentialProviderRequest","x":' + b"[" * 100_000],
    ids=["array", "object", "inside-request"],
)
def test_deeply_nested_json_is_a_bad_request(run_provider: RunProvider, stub: StubClient, raw: bytes) -> None:
    line = failed(run_provider(raw), 2)
    assert "RecursionError" not in line and "internal error" not in line
    assert stub.calls() == []


@pytest.mark.parametrize(
    ("token", "fragment"),
    [("", "4 to 20000 characters"), ("a", "4 to 20000 characters"), ("abc", "4 to 20000 characters"),
     ("\ud800abcdefgh", "printable ASCII"), ("abc\ndefgh", "printable ASCII"), ("abc defgh", "printable ASCII"),
     ("x" * 20001, "4 to 20000 characters")],
    ids=["empty", "one", "three", "surrogate", "newline", "space", "too-long"],
)
def test_a_service_account_token_sts_would_refuse_is_a_bad_request(
    run_provider: RunProvider, stub: StubClient, token: str, fragment: str
) -> None:
    request = make_request(f"{OTHER}.dkr.ecr.us-west-2.amazonaws.com/app", serviceAccountToken=token,
                           serviceAccountAnnotations={"eks.amazonaws.com/ecr-role-arn": ROLE})
    line = failed(run_provider(request), 2)
    assert "serviceAccountToken" in line and fragment in line
    assert stub.calls() == []


def test_a_failing_credential_process_is_one_line(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "creds.sh"
    script.write_text("#!/bin/sh\necho 'first problem' >&2\necho 'second line' >&2\necho '  third' >&2\nexit 3\n")
    script.chmod(0o700)
    config = tmp_path / "config"
    config.write_text(f"[default]\ncredential_process = {script}\n")
    env = {k: v for k, v in provider_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    line = failed(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app"),
                               env={**env, "AWS_CONFIG_FILE": str(config)}), 3)
    assert line.endswith("no usable AWS credentials: custom-process failed: first problem")


def test_stdin_that_never_closes_is_reported_as_such(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient
) -> None:
    proc = subprocess.Popen([*provider_cmd, "--timeout", "2s"], env=provider_env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(b'{"kind":"CredentialProviderRequest",')
    proc.stdin.flush()  # and never closed until the run has ended
    try:
        proc.wait(timeout=60)
    finally:
        proc.stdin.close()
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    line = failed(subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode()), 2)
    assert "stdin was not read to its end" in line and "AWS" not in line
    assert stub.calls() == []


# ---- the deadline: a hanging AWS with and without a still-valid cached token -------------------


def age_cache_entries(env: dict[str, str], seconds: float) -> None:
    """Make every cached token `seconds` older (fetched and expiring earlier), as time would."""
    for path in Path(env["ECR_KUBELET_CACHE_DIR"]).glob("*.json"):
        entry = json.loads(path.read_bytes())
        entry["fetched_at"] -= seconds
        entry["expires_at"] -= seconds
        path.write_text(json.dumps(entry))


def test_hanging_aws_with_a_still_valid_cached_token_answers_with_it(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    image = make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")
    cached = ok_response(run_provider(image))["auth"][f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com"]["password"]
    age_cache_entries(provider_env, 7 * 3600)  # past its refresh point: the run must try AWS, which hangs
    stub.configure(delay_seconds=30)
    started = time.time()
    result = run_provider(image, "--timeout", "4s")
    took = time.time() - started
    body = ok_response(result)
    assert body["auth"][f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com"]["password"] == cached
    # Said whichever way the deadline fell (the refresh failed in time, or the backstop answered).
    assert "the cached token, still valid" in result.stderr
    # the kubelet may keep it until expiry minus the margin: 5 h less 5 min, less the run
    assert 5 * 3600 - 300 - took - 60 <= duration_seconds(body["cacheDuration"]) <= 5 * 3600 - 300
    assert len(stub.calls("ecr")) == 1  # only the first run's call completed


def test_throttling_with_a_still_valid_cached_token_answers_from_it_after_a_few_attempts(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    image = make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")
    cached = ok_response(run_provider(image))["auth"]
    age_cache_entries(provider_env, 7 * 3600)
    stub.configure(throttle_next=1000)
    result = run_provider(image)
    assert ok_response(result)["auth"] == cached
    assert "serving the cached token, still valid, because refreshing failed" in result.stderr
    # the default AWS_MAX_ATTEMPTS (3), not a minute of retries: the cached answer comes soon
    assert [c["status"] for c in stub.calls("ecr")] == [200, 400, 400, 400]


def test_hanging_aws_without_a_cached_token_is_unavailable(run_provider: RunProvider, stub: StubClient) -> None:
    stub.configure(delay_seconds=30)
    line = failed(run_provider(make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app"), "--timeout", "3s"), 4)
    # The outcome, not where the deadline fell (see test_deadline_bounds_the_run).
    assert ": gave up after 3s: " in line, line


def test_a_hung_credential_process_is_ended_by_the_deadline_with_or_without_a_cached_token(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    image = make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")
    script = tmp_path / "creds.sh"
    script.write_text('#!/bin/sh\n[ -e "$0.hang" ] && exec sleep 20\n'
                      'echo \'{"Version": 1, "AccessKeyId": "AKIAPROCESS000000000", "SecretAccessKey": "s"}\'\n')
    script.chmod(0o700)
    config = tmp_path / "config"
    config.write_text(f"[default]\ncredential_process = {script}\n")
    env = {k: v for k, v in provider_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env["AWS_CONFIG_FILE"] = str(config)
    cached = ok_response(run_provider(image, env=env))["auth"][f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com"]
    Path(f"{script}.hang").write_text("")
    age_cache_entries(provider_env, 7 * 3600)
    body = ok_response(run_provider(image, "--timeout", "3s", env=env))
    assert body["auth"][f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com"] == cached
    line = failed(run_provider(image, "--timeout", "3s", env={**env, "ECR_KUBELET_DISABLE_CACHE": "1"}), 4)
    # The outcome, not where the deadline fell (see test_deadline_bounds_the_run).
    assert ": gave up after 3s: " in line, line
    assert len(stub.calls("ecr")) == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(("--timeout", "0s"), "--timeout must be more than 0s and at most 58s"),
     (("--timeout", "59s"), "--timeout must be more than 0s and at most 58s"),
     (("--timeout", "1e3s"), "--timeout: missing or unknown unit"),
     (("--expiry-margin=-1s",), "--expiry-margin must not be negative"),
     (("--expiry-margin", "1000000000h"), "--expiry-margin: duration"),
     (("--refresh-fraction", "nan"), "--refresh-fraction"), (("--role-arn", ""), "--role-arn must not be empty"),
     (("--sa-role-annotation", ""), "--sa-role-annotation must not be empty")],
)
def test_each_bad_flag_names_itself(run_provider: RunProvider, stub: StubClient, args: tuple[str, ...],
                                    fragment: str) -> None:
    assert fragment in failed(run_provider(make_request("gcr.io/x"), *args), 2)


@pytest.mark.parametrize("value", ["0", "21", "abc", "-1", "1.5"])
def test_a_bad_aws_max_attempts_is_a_usage_error(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], value: str
) -> None:
    line = failed(run_provider(make_request("gcr.io/x"), env={**provider_env, "AWS_MAX_ATTEMPTS": value}), 2)
    assert "AWS_MAX_ATTEMPTS must be a whole number from 1 to 20" in line


PROXY_PASSWORD = "Pr0xy@Passw/0rd"  # percent-encoded in the URLs below, as it must be


@pytest.mark.parametrize(("name", "url"), [
    ("HTTP_PROXY", "socks5://puller:Pr0xy%40Passw%2F0rd@127.0.0.1:1"),  # botocore's own masking misses socks5
    ("http_proxy", "http://puller:Pr0xy%40Passw%2F0rd@127.0.0.1:1"),
    ("HTTP_PROXY", "puller:Pr0xy%40Passw%2F0rd@127.0.0.1:1"),  # no scheme
    ("HTTP_PROXY", "http://puller:Pr0xy%40Passw%2F0rd@127.0.0.1:99999"),  # a port botocore cannot parse
])
def test_a_failing_proxy_never_shows_its_password(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], name: str, url: str
) -> None:
    env = {**provider_env, name: url, "AWS_MAX_ATTEMPTS": "1"}
    request = make_request(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com/app")
    line = failed(run_provider(request, env=env), 4)
    assert "127.0.0.1" in line or "proxy" in line.lower()
    verbose = run_provider(request, "-vv", env=env)
    assert verbose.returncode == 4 and verbose.stdout == ""
    for text in (line, verbose.stderr):
        assert "Pr0xy" not in text and "Passw" not in text, text
