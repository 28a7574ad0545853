"""The AWS stub must answer the way botocore expects, or every other test is meaningless."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from ecr_kubelet.protocol import validate_request
from ecr_kubelet.wire import quick_request
from helpers import StubClient, make_jwt, make_request

STUB_SCRIPT = Path(__file__).with_name("stub_server.py")


def _client(service: str, url: str, region: str = "us-east-1", **config: Any) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=url,
        region_name=region,
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="stub-secret",
        config=Config(**{"retries": {"mode": "standard", "max_attempts": 3}, **config}),
    )


def _decode(token: str) -> tuple[str, str]:
    user, _, password = base64.b64decode(token).decode().partition(":")
    return user, password


def test_ecr_token(stub: StubClient) -> None:
    before = time.time()
    resp = _client("ecr", stub.url, region="eu-west-1").get_authorization_token()
    after = time.time()
    (data,) = resp["authorizationData"]
    user, password = _decode(data["authorizationToken"])
    assert user == "AWS"
    assert data["proxyEndpoint"] == "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    # 12 h from when the stub answered (expiresAt has whole-second precision on the wire)
    assert before + 12 * 3600 - 1 <= data["expiresAt"].timestamp() <= after + 12 * 3600

    (call,) = stub.calls()
    assert call["service"] == "ecr" and call["action"] == "GetAuthorizationToken"
    assert call["region"] == "eu-west-1"
    assert call["access_key_id"] == "AKIAIOSFODNN7EXAMPLE"
    assert call["password"] == password
    assert call["status"] == 200


def test_ecr_registry_ids_and_unique_passwords(stub: StubClient) -> None:
    ecr = _client("ecr", stub.url)
    ids = ["111122223333", "444455556666"]
    resp = ecr.get_authorization_token(registryIds=ids)
    endpoints = [d["proxyEndpoint"] for d in resp["authorizationData"]]
    assert endpoints == [f"https://{i}.dkr.ecr.us-east-1.amazonaws.com" for i in ids]
    ecr.get_authorization_token()
    calls = stub.calls(service="ecr")
    assert calls[0]["registry_ids"] == ids
    assert calls[0]["password"] != calls[1]["password"]


def test_ecr_public_token(stub: StubClient) -> None:
    resp = _client("ecr-public", stub.url).get_authorization_token()
    user, password = _decode(resp["authorizationData"]["authorizationToken"])
    assert user == "AWS"
    assert resp["authorizationData"]["expiresAt"].timestamp() > time.time() + 11 * 3600
    (call,) = stub.calls(service="ecr-public")
    assert call["password"] == password


def test_expiry_settings(stub: StubClient) -> None:
    ecr = _client("ecr", stub.url)
    stub.configure(expires_at=1_000_000_000)
    assert ecr.get_authorization_token()["authorizationData"][0]["expiresAt"].timestamp() == 1_000_000_000
    stub.configure(expires_at=None, omit_expires_at=True)
    assert "expiresAt" not in ecr.get_authorization_token()["authorizationData"][0]
    stub.configure(omit_expires_at=False, token_lifetime_seconds=600)
    before = time.time()
    expires = ecr.get_authorization_token()["authorizationData"][0]["expiresAt"].timestamp()
    assert before + 600 - 1 <= expires <= time.time() + 600


def test_malformed_token(stub: StubClient) -> None:
    stub.configure(malformed_token=True)
    token = _client("ecr", stub.url).get_authorization_token()["authorizationData"][0]["authorizationToken"]
    with pytest.raises(ValueError):
        _decode(token)


def test_configured_password_is_issued_and_recorded(stub: StubClient) -> None:
    stub.configure(password="registry-htpasswd-secret")
    for service in ("ecr", "ecr-public"):
        data = _client(service, stub.url).get_authorization_token()["authorizationData"]
        token = (data[0] if isinstance(data, list) else data)["authorizationToken"]
        assert _decode(token) == ("AWS", "registry-htpasswd-secret")
    assert [c["password"] for c in stub.calls()] == ["registry-htpasswd-secret"] * 2


def test_web_identity(stub: StubClient) -> None:
    jwt = make_jwt("system:serviceaccount:team:puller")
    sts = _client("sts", stub.url)
    before = time.time()
    resp = sts.assume_role_with_web_identity(
        RoleArn="arn:aws:iam::210987654321:role/pull", RoleSessionName="s1", WebIdentityToken=jwt
    )
    creds = resp["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    assert before + 3600 - 1 <= creds["Expiration"].timestamp() <= time.time() + 3600
    assert resp["AssumedRoleUser"]["Arn"] == "arn:aws:sts::210987654321:assumed-role/pull/s1"

    (call,) = stub.calls(service="sts")
    assert call["web_identity"] == {
        "iss": "https://oidc.example.test",
        "sub": "system:serviceaccount:team:puller",
        "aud": "sts.amazonaws.com",
    }
    assert call["role_arn"] == "arn:aws:iam::210987654321:role/pull"
    assert jwt not in json.dumps(stub.calls())
    assert jwt.split(".")[1] not in json.dumps(stub.calls())

    # The issued credentials belong to the role's account.
    ecr = boto3.client(
        "ecr",
        endpoint_url=stub.url,
        region_name="us-west-2",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    data = ecr.get_authorization_token()["authorizationData"][0]
    assert data["proxyEndpoint"] == "https://210987654321.dkr.ecr.us-west-2.amazonaws.com"
    assert stub.calls(service="ecr")[0]["access_key_id"] == creds["AccessKeyId"]


def test_web_identity_errors(stub: StubClient) -> None:
    sts = _client("sts", stub.url)
    role = "arn:aws:iam::210987654321:role/pull"
    with pytest.raises(ClientError) as err:
        sts.assume_role_with_web_identity(RoleArn=role, RoleSessionName="s1", WebIdentityToken="not-a-jwt")
    assert err.value.response["Error"]["Code"] == "InvalidIdentityToken"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    stub.configure(deny_web_identity=True)
    with pytest.raises(ClientError) as err:
        sts.assume_role_with_web_identity(RoleArn=role, RoleSessionName="s1", WebIdentityToken=make_jwt("x"))
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    assert "not-a-jwt" not in json.dumps(stub.calls())


POD_ROLE = "arn:aws:iam::210987654321:role/team-pull"


def _conforms(value: Any, shape: Any, path: str = "") -> list[str]:
    """Where a parsed answer departs from its botocore shape: missing required members, unknown members,
    wrong types."""
    problems: list[str] = []
    if shape.type_name == "structure":
        if not isinstance(value, dict):
            return [f"{path}: not a structure"]
        value = {k: v for k, v in value.items() if k != "ResponseMetadata"}
        problems += [f"{path}.{m}: missing" for m in shape.required_members if m not in value]
        for name, member in value.items():
            if name not in shape.members:
                problems.append(f"{path}.{name}: not in the model")
            else:
                problems += _conforms(member, shape.members[name], f"{path}.{name}")
    elif shape.type_name == "string" and not isinstance(value, str):
        problems.append(f"{path}: not a string")
    elif shape.type_name == "timestamp" and not hasattr(value, "timestamp"):
        problems.append(f"{path}: not a timestamp")
    return problems


def test_eks_auth_answers_the_models_shape_with_credentials_of_the_roles_account(stub: StubClient) -> None:
    stub.configure(pod_identity_associations={"prod": {"team/puller": POD_ROLE}})
    client = _client("eks-auth", stub.url, region="eu-west-1")
    jwt = make_jwt("system:serviceaccount:team:puller", aud="pods.eks.amazonaws.com")
    before = time.time()
    resp = client.assume_role_for_pod_identity(clusterName="prod", token=jwt)
    operation = client.meta.service_model.operation_model("AssumeRoleForPodIdentity")
    assert operation.http["requestUri"] == "/clusters/{clusterName}/assume-role-for-pod-identity"
    assert _conforms(resp, operation.output_shape) == []
    assert resp["subject"] == {"namespace": "team", "serviceAccount": "puller"}
    assert resp["audience"] == "pods.eks.amazonaws.com"
    assert resp["podIdentityAssociation"]["associationArn"].startswith("arn:aws:eks:eu-west-1:210987654321:")
    creds = resp["credentials"]
    assert before + 3600 - 1 <= creds["expiration"].timestamp() <= time.time() + 3600

    (call,) = stub.calls(service="eks-auth")
    assert (call["action"], call["cluster"], call["region"]) == ("AssumeRoleForPodIdentity", "prod", "eu-west-1")
    assert call["access_key_id"] == "AKIAIOSFODNN7EXAMPLE" and call["role_arn"] == POD_ROLE
    assert call["web_identity"]["sub"] == "system:serviceaccount:team:puller"
    assert jwt not in json.dumps(stub.calls()) and jwt.split(".")[1] not in json.dumps(stub.calls())

    ecr = boto3.client("ecr", endpoint_url=stub.url, region_name="us-west-2",
                       aws_access_key_id=creds["accessKeyId"], aws_secret_access_key=creds["secretAccessKey"],
                       aws_session_token=creds["sessionToken"])
    data = ecr.get_authorization_token()["authorizationData"][0]
    assert data["proxyEndpoint"] == "https://210987654321.dkr.ecr.us-west-2.amazonaws.com"


def test_password_pod_identity_only_gives_the_password_to_eks_auth_credentials_alone(stub: StubClient) -> None:
    stub.configure(pod_identity_associations={"prod": {"team/puller": POD_ROLE}}, password="known",
                   password_pod_identity_only=True)
    jwt = make_jwt("system:serviceaccount:team:puller", aud="pods.eks.amazonaws.com")
    creds = _client("eks-auth", stub.url).assume_role_for_pod_identity(clusterName="prod", token=jwt)["credentials"]
    assumed = _client("sts", stub.url).assume_role(RoleArn=POD_ROLE, RoleSessionName="other")["Credentials"]
    pod = boto3.client("ecr", endpoint_url=stub.url, region_name="us-west-2", aws_access_key_id=creds["accessKeyId"],
                       aws_secret_access_key=creds["secretAccessKey"], aws_session_token=creds["sessionToken"])
    role = boto3.client("ecr", endpoint_url=stub.url, region_name="us-west-2",
                        aws_access_key_id=assumed["AccessKeyId"], aws_secret_access_key=assumed["SecretAccessKey"],
                        aws_session_token=assumed["SessionToken"])
    passwords = [_decode(client.get_authorization_token()["authorizationData"][0]["authorizationToken"])[1]
                 for client in (pod, role, _client("ecr", stub.url, region="us-west-2"))]
    assert passwords[0] == "known"
    assert "known" not in passwords[1:] and len(set(passwords)) == 3


@pytest.mark.parametrize("settings, cluster, token, code, status", [
    ({}, "prod", make_jwt("system:serviceaccount:team:other", aud="pods.eks.amazonaws.com"),
     "ResourceNotFoundException", 404),
    ({}, "nowhere", make_jwt("system:serviceaccount:team:puller", aud="pods.eks.amazonaws.com"),
     "ResourceNotFoundException", 404),
    ({}, "prod", make_jwt("system:serviceaccount:team:puller"), "InvalidTokenException", 400),  # audience
    ({}, "prod", "not.a.jwt", "InvalidTokenException", 400),
    ({}, "prod", make_jwt("system:serviceaccount:team:puller", aud="pods.eks.amazonaws.com", exp_in=-60),
     "ExpiredTokenException", 400),
    ({"deny_pod_identity": True}, "prod", make_jwt("system:serviceaccount:team:puller", aud="pods.eks.amazonaws.com"),
     "AccessDeniedException", 400),
    ({"throttle_eks_auth_next": 1}, "prod",
     make_jwt("system:serviceaccount:team:puller", aud="pods.eks.amazonaws.com"), "ThrottlingException", 429),
])
def test_eks_auth_errors(stub: StubClient, settings: dict[str, Any], cluster: str, token: str, code: str,
                         status: int) -> None:
    stub.configure(pod_identity_associations={"prod": {"team/puller": POD_ROLE}}, **settings)
    client = _client("eks-auth", stub.url, retries={"mode": "standard", "total_max_attempts": 1})
    with pytest.raises(getattr(client.exceptions, code)) as err:
        client.assume_role_for_pod_identity(clusterName=cluster, token=token)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    (call,) = stub.calls(service="eks-auth")
    assert call["status"] == status and token not in json.dumps(call)


def test_assume_role_and_caller_identity(stub: StubClient) -> None:
    sts = _client("sts", stub.url, region="eu-central-1")
    assert sts.get_caller_identity()["Account"] == "123456789012"
    resp = sts.assume_role(RoleArn="arn:aws:iam::999988887777:role/path/ecr", RoleSessionName="node")
    assumed = boto3.client(
        "sts",
        endpoint_url=stub.url,
        region_name="eu-central-1",
        aws_access_key_id=resp["Credentials"]["AccessKeyId"],
        aws_secret_access_key=resp["Credentials"]["SecretAccessKey"],
        aws_session_token=resp["Credentials"]["SessionToken"],
    )
    assert assumed.get_caller_identity()["Arn"] == "arn:aws:sts::999988887777:assumed-role/ecr/node"
    call = stub.calls(action="AssumeRole")[0]
    assert call["region"] == "eu-central-1"
    assert call["role_session_name"] == "node"
    assert call["issued_access_key_id"] == resp["Credentials"]["AccessKeyId"]


def test_throttling_is_retried(stub: StubClient) -> None:
    stub.configure(throttle_next=2)
    resp = _client("ecr", stub.url).get_authorization_token()
    assert resp["ResponseMetadata"]["RetryAttempts"] == 2
    assert [c["status"] for c in stub.calls()] == [400, 400, 200]


def test_fail_next_is_retried_and_fail_all_fails(stub: StubClient) -> None:
    stub.configure(fail_next=1)
    _client("ecr", stub.url).get_authorization_token()
    assert [c["status"] for c in stub.calls()] == [500, 200]
    stub.configure(fail_all=True)
    with pytest.raises(ClientError) as err:
        _client("ecr-public", stub.url).get_authorization_token()
    assert err.value.response["Error"]["Code"] == "ServiceUnavailableException"


def test_deny(stub: StubClient) -> None:
    stub.configure(deny=True)
    with pytest.raises(ClientError) as err:
        _client("ecr", stub.url).get_authorization_token()
    assert err.value.response["Error"]["Code"] == "AccessDeniedException"
    assert len(stub.calls()) == 1  # not retried


def test_rate_limit_is_a_token_bucket_per_account_and_region(stub: StubClient) -> None:
    stub.configure(rate_limit={"rate": 0.001, "burst": 3})  # refills one call in ~17 minutes
    ecr = _client("ecr", stub.url, retries={"mode": "standard", "total_max_attempts": 1})
    for _ in range(3):
        ecr.get_authorization_token()
    with pytest.raises(ClientError) as err:
        ecr.get_authorization_token()
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    _client("ecr", stub.url, region="eu-west-1").get_authorization_token()  # another region: its own quota
    assert [c["status"] for c in stub.calls()] == [200, 200, 200, 400, 200]
    with pytest.raises(urllib.error.HTTPError):
        stub.configure(rate_limit={"rate": 0, "burst": 3})


def test_callers_lists_each_access_key_that_called_once(stub: StubClient) -> None:
    assert stub.callers() == []
    stub.configure(deny=True)  # a refused call is a call too
    for key in ("AKIASECONDCALLER0001", "AKIAFIRSTCALLER00001", "AKIASECONDCALLER0001"):
        ecr = boto3.client("ecr", endpoint_url=stub.url, region_name="us-east-1", aws_access_key_id=key,
                           aws_secret_access_key="stub-secret", config=Config(retries={"total_max_attempts": 1}))
        with pytest.raises(ClientError):
            ecr.get_authorization_token()
    assert stub.callers() == ["AKIAFIRSTCALLER00001", "AKIASECONDCALLER0001"]


def test_unknown_setting_rejected(stub: StubClient) -> None:
    with pytest.raises(urllib.error.HTTPError):
        stub.configure(throttle_nxt=1)


def test_concurrent_clients(stub: StubClient) -> None:
    # The stub holds every call until 50 are in flight at once: a stub serving one request at a time
    # could never answer any of them (its barrier breaks after 30 s and every call fails).
    stub.configure(barrier_parties=50)

    def fetch(_: int) -> str:
        client = _client("ecr", stub.url, retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=60)
        token = client.get_authorization_token()["authorizationData"][0]
        return _decode(token["authorizationToken"])[1]

    with ThreadPoolExecutor(50) as pool:
        passwords = list(pool.map(fetch, range(50)))
    assert len(set(passwords)) == 50
    assert sorted(passwords) == sorted(c["password"] for c in stub.calls())


def test_make_request_builds_what_the_provider_accepts_as_a_kubelet_request() -> None:
    # Judged by the provider's own validator, not by a copy of the helper.
    token = make_jwt("system:serviceaccount:a:b")
    req = make_request("public.ecr.aws/x/y", serviceAccountToken=token, serviceAccountAnnotations={"k": "v"})
    parsed = validate_request(req)
    assert (parsed.api_version, parsed.image) == ("credentialprovider.kubelet.k8s.io/v1", "public.ecr.aws/x/y")
    assert parsed.service_account_token == token and parsed.service_account_annotations == {"k": "v"}
    assert quick_request(req) == parsed  # the canonical shape: the fast path takes it as is


def test_standalone_mode() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(STUB_SCRIPT), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = StubClient(url)
        _client("ecr", url).get_authorization_token()
        assert len(client.calls(service="ecr")) == 1
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert stderr == ""  # quiet unless --verbose
