"""A cache hit loads only what it needs: the start-up time of every kubelet call is mostly imports.

A kubelet hit loads none of the packages that cost milliseconds and do nothing for it (measured in
the binary: logging 5 ms, re with enum 6 ms, dataclasses 4 ms, hashlib's OpenSSL 2 ms, ...); a helper
`get` served from the cache loads nothing a kubelet hit does not. Listed with `PYTHONPROFILEIMPORTTIME`,
which prints every import, on the installed console script and as the frozen binary runs (tests/frozen.py):
only there is JSON read without the json package (ecr_kubelet/jsoncodec.py, ecr_kubelet/pinned.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from frozen import prelude
from helpers import StubClient, make_request

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def imported_modules(cmd: list[str], stdin: str, env: dict[str, str]) -> set[str]:
    result = subprocess.run(cmd, input=stdin, env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


# Each is imported on a miss (botocore brings most of them) or for an unusual request, never on a hit.
NOT_ON_A_HIT = {"botocore", "pydantic", "urllib3", "logging", "re", "enum", "json", "dataclasses",
                "typing", "inspect", "pathlib", "hashlib", "_hashlib", "signal", "argparse", "contextlib",
                "datetime", "base64", "tempfile", "threading", "yaml"}
# A pip install reads JSON with the json package, which brings re and enum, and hashes with hashlib.
JSON_PACKAGE = {"json", "re", "enum", "hashlib", "_hashlib"}
SCRIPT = Path(sys.executable).parent / "ecr-credential-provider"


@pytest.fixture(params=["binary", "pip install"])
def install(request: pytest.FixtureRequest) -> tuple[list[str], set[str]]:
    """The command that runs the plugin, and what a cache hit must not load there."""
    if request.param == "binary":
        return [sys.executable, "-c", prelude() + "from ecr_kubelet.cli import run\nrun()"], \
            NOT_ON_A_HIT
    return [str(SCRIPT)], NOT_ON_A_HIT - JSON_PACKAGE


def test_a_kubelet_cache_hit_loads_none_of_the_expensive_modules(
    provider_env: dict[str, str], stub: StubClient, install: tuple[list[str], set[str]]
) -> None:
    command, not_on_a_hit = install
    request = json.dumps(make_request(f"{HOST}/team/app")) + "\n"
    imported_modules(command, request, provider_env)  # fills the shared cache
    hit = imported_modules(command, request, provider_env)
    assert len(stub.calls()) == 1
    assert {"ecr_kubelet.provider", "ecr_kubelet.cache"} <= hit
    assert {m for m in hit if m.split(".")[0] in not_on_a_hit} == set()
    # Our own modules that serve only a miss or a pod's token: each is unmarshalled and run for nothing.
    assert hit.isdisjoint(OURS_NOT_ON_A_NODE_HIT)


OURS_NOT_ON_A_NODE_HIT = {f"ecr_kubelet.{name}" for name in (
    "awsapi", "credentials", "tokens", "eks_auth", "aws_errors", "claims", "protocol", "diagnose", "dockerhelper",
    "validate_config", "kubelet_config", "metrics")}


def test_a_cache_hit_on_an_ec2_node_asks_instance_metadata_without_http_client(
    provider_env: dict[str, str], stub: StubClient, install: tuple[list[str], set[str]]
) -> None:
    command, not_on_a_hit = install
    # The default chain's last source, the usual one on EKS nodes: the role is read from instance
    # metadata on every run (the cache key names it), over a plain socket (metadata.plain_http).
    from metadata_server import MetadataServer

    metadata = MetadataServer().start()
    try:
        env = {k: v for k, v in provider_env.items()
               if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED")}
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = metadata.url
        request = json.dumps(make_request(f"{HOST}/team/app")) + "\n"
        imported_modules(command, request, env)  # fills the shared cache
        before = len(metadata.requests)
        hit = imported_modules(command, request, env)
    finally:
        metadata.stop()
    # the session token, the role, then the instance profile (its account is part of the identity)
    assert len(stub.calls()) == 1 and len(metadata.requests) - before == 3
    assert {m for m in hit if m.split(".")[0] in not_on_a_hit | {"http", "socket", "urllib", "email", "ssl"}} == set()


def test_cached_helper_get_imports_nothing_a_kubelet_hit_does_not(
    provider_env: dict[str, str], stub: StubClient, tmp_path: Path
) -> None:
    # The pip install's console script: invoked by the helper's name it speaks the helper protocol.
    link = tmp_path / "docker-credential-ecr-login"
    link.symlink_to(SCRIPT)
    request = json.dumps(make_request(f"{HOST}/team/app")) + "\n"
    imported_modules([str(SCRIPT)], request, provider_env)  # fills the shared cache
    kubelet_hit = imported_modules([str(SCRIPT)], request, provider_env)
    helper_hit = imported_modules([str(link), "get"], HOST, provider_env)
    assert len(stub.calls()) == 1  # both were cache hits
    assert "ecr_kubelet.dockerhelper" in helper_hit
    heavy = {m for m in helper_hit if m.split(".")[0] in (NOT_ON_A_HIT - JSON_PACKAGE) | {"boto3"}}
    assert heavy == set()
    assert helper_hit - kubelet_hit <= {"ecr_kubelet.dockerhelper"}


def test_a_pod_identity_cache_hit_loads_no_aws_code(
    provider_env: dict[str, str], stub: StubClient, install: tuple[list[str], set[str]]
) -> None:
    # Pod-identity mode plans from the request's token alone (its claims name the cache entry): a hit makes no
    # eks-auth call and needs no botocore; the JWT is decoded with binascii alone (base64 would load re).
    from helpers import make_jwt

    stub.configure(pod_identity_associations={"prod": {"team/puller": "arn:aws:iam::210987654321:role/pull"}})
    env = {**provider_env, "ECR_KUBELET_EKS_CLUSTER_NAME": "prod", "AWS_ENDPOINT_URL_EKS_AUTH": stub.url}
    command, not_on_a_hit = install

    def request() -> str:
        token = make_jwt("system:serviceaccount:team:puller", aud="pods.eks.amazonaws.com")
        return json.dumps(make_request(f"{HOST}/team/app", serviceAccountToken=token,
                                       serviceAccountAnnotations={})) + "\n"

    imported_modules(command, request(), env)  # fills the shared cache
    hit = imported_modules(command, request(), env)
    assert [c["service"] for c in stub.calls()] == ["eks-auth", "ecr"]  # the second run was a hit
    assert "ecr_kubelet.pod_identity" in hit
    assert {m for m in hit if m.split(".")[0] in not_on_a_hit} == set()
