"""Endpoint selection and error translation, using botocore's own endpoint rules (no network)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from ecr_kubelet.awsapi import client_config, new_session, translate_error
from ecr_kubelet.errors import AuthError, ProviderError, UnavailableError
from ecr_kubelet.registry import classify_host

ACCT = "123456789012"


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL_ECR_PUBLIC", "AWS_ENDPOINT_URL_STS",
                 "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")


def endpoint(host: str, service: str | None = None) -> str:
    registry = classify_host(host)
    assert registry is not None
    name = service or registry.service
    client = new_session().create_client(
        name, region_name=registry.region, config=client_config(name, registry),
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="not-a-secret",
    )
    return str(client.meta.endpoint_url)


@pytest.mark.parametrize(
    ("host", "ecr", "sts"),
    [
        (f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com", "https://api.ecr.us-east-1.amazonaws.com",
         "https://sts.us-east-1.amazonaws.com"),
        (f"{ACCT}.dkr.ecr-fips.us-east-1.amazonaws.com", "https://ecr-fips.us-east-1.amazonaws.com",
         "https://sts-fips.us-east-1.amazonaws.com"),
        (f"{ACCT}.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "https://ecr-fips.us-gov-west-1.amazonaws.com",
         "https://sts.us-gov-west-1.amazonaws.com"),
        (f"{ACCT}.dkr-ecr.eu-west-1.on.aws", "https://ecr.eu-west-1.api.aws", "https://sts.eu-west-1.api.aws"),
        (f"{ACCT}.dkr-ecr-fips.us-gov-west-1.on.aws", "https://ecr-fips.us-gov-west-1.api.aws",
         "https://sts-fips.us-gov-west-1.api.aws"),
        (f"{ACCT}.dkr.ecr.cn-north-1.amazonaws.com.cn", "https://api.ecr.cn-north-1.amazonaws.com.cn",
         "https://sts.cn-north-1.amazonaws.com.cn"),
        (f"{ACCT}.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn",
         "https://ecr.cn-north-1.api.amazonwebservices.com.cn",
         "https://sts.cn-north-1.api.amazonwebservices.com.cn"),
        (f"{ACCT}.dkr.ecr.us-iso-east-1.c2s.ic.gov", "https://api.ecr.us-iso-east-1.c2s.ic.gov",
         "https://sts.us-iso-east-1.c2s.ic.gov"),
        (f"{ACCT}.dkr.ecr.eusc-de-east-1.amazonaws.eu", "https://api.ecr.eusc-de-east-1.amazonaws.eu",
         "https://sts.eusc-de-east-1.amazonaws.eu"),
        ("public.ecr.aws", "https://api.ecr-public.us-east-1.amazonaws.com", "https://sts.us-east-1.amazonaws.com"),
        ("ecr-public.aws.com", "https://ecr-public.us-east-1.api.aws", "https://sts.us-east-1.api.aws"),
    ],
)
def test_api_endpoint_follows_the_registry_host(host: str, ecr: str, sts: str) -> None:
    assert endpoint(host) == ecr
    assert endpoint(host, "sts") == sts


def test_an_endpoint_override_wins_over_fips_and_dualstack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", "http://127.0.0.1:9")
    assert endpoint(f"{ACCT}.dkr-ecr-fips.us-west-2.on.aws") == "http://127.0.0.1:9"
    registry = classify_host(f"{ACCT}.dkr-ecr-fips.us-west-2.on.aws")
    assert registry is not None
    config: Any = client_config("ecr", registry)
    assert not config.use_fips_endpoint and not config.use_dualstack_endpoint


def test_retries_and_timeouts_are_bounded() -> None:
    registry = classify_host(f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com")
    assert registry is not None
    config: Any = client_config("ecr", registry)
    assert config.connect_timeout <= 5 and config.read_timeout <= 15
    assert getattr(config, "retries") == {"mode": "standard", "total_max_attempts": 5}


def client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "GetAuthorizationToken")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error("AccessDeniedException", 400), AuthError),
        (client_error("UnrecognizedClientException", 400), AuthError),
        (client_error("InvalidIdentityToken", 400), AuthError),
        (client_error("ExpiredTokenException", 400), AuthError),
        (client_error("Whatever", 403), AuthError),
        (client_error("ThrottlingException", 400), UnavailableError),
        (client_error("ServerException", 500), UnavailableError),
        (client_error("ServiceUnavailableException", 503), UnavailableError),
        (client_error("InvalidParameterException", 400), ProviderError),
        (NoCredentialsError(), AuthError),
        (EndpointConnectionError(endpoint_url="https://x"), UnavailableError),
        (RuntimeError("boom"), ProviderError),
    ],
)
def test_error_translation(exc: Exception, kind: type[ProviderError]) -> None:
    translated = translate_error(exc, "ecr:GetAuthorizationToken")
    assert type(translated) is kind
    assert str(translated).startswith("ecr:GetAuthorizationToken")
