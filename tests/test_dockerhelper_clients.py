"""A real client (crane) configured through `config.json` with our helper, against a real registry
(`registry_server.py`: Debian's docker-registry, TLS, htpasswd whose password is the one the AWS stub
issues) under ECR names. The credentials are proven by the registry accepting them, not only printed.

The client reaches the registry through `connect_proxy.py` (names mapped to loopback; see there why).
Marked e2e: CI runs it against the built binary too. crane and docker-registry come from scripts/setup;
without them the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import FAKE_SECRET_ACCESS_KEY
from connect_proxy import ConnectProxy
from helpers import StubClient, make_request, require_tool
from registry_server import REGISTRY_BINARY, REPOSITORY, TAG, RegistryServer

pytestmark = pytest.mark.e2e

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
PUBLIC = "public.ecr.aws"
LOOKALIKE = f"{HOST}.evil.example"
FOREIGN = "registry.example.com"
NAMES = [HOST, PUBLIC, LOOKALIKE, FOREIGN]
PASSWORD = "registry-pw-" + secrets.token_urlsafe(16)  # what the stub issues and the registry expects

Crane = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def crane_binary() -> str:
    local = Path(sys.executable).parent / "crane"
    return require_tool("crane", str(local) if local.exists() else shutil.which("crane"))


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    require_tool("docker-registry", REGISTRY_BINARY or None)
    with RegistryServer(PASSWORD, NAMES) as server:
        yield server


@pytest.fixture(scope="session")
def proxy(registry: RegistryServer) -> Iterator[ConnectProxy]:
    server = ConnectProxy({name: registry.port for name in NAMES}).start()
    yield server
    server.stop()


@pytest.fixture
def docker_config(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(config: dict[str, Any]) -> Path:
        directory = tmp_path / "docker-config"
        directory.mkdir(exist_ok=True)
        (directory / "config.json").write_text(json.dumps(config))
        return directory

    return write


CRED_HELPERS = {"credHelpers": {name: "ecr-login" for name in NAMES}}


@pytest.fixture
def crane(crane_binary: str, provider_cmd: list[str], provider_env: dict[str, str], registry: RegistryServer,
          proxy: ConnectProxy, docker_config: Callable[[dict[str, Any]], Path], tmp_path: Path,
          stub: StubClient) -> Crane:
    """crane with our executable installed as `docker-credential-ecr-login` on its PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker-credential-ecr-login").symlink_to(provider_cmd[0])
    stub.configure(password=PASSWORD)

    def run(*args: str, config: dict[str, Any] | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        client_env = {
            **provider_env,  # the AWS side: the helper inherits it from the client, as on a CI runner
            "PATH": f"{bin_dir}{os.pathsep}{provider_env['PATH']}",
            "DOCKER_CONFIG": str(docker_config(CRED_HELPERS if config is None else config)),
            "SSL_CERT_FILE": str(registry.ca_file),
            "HTTPS_PROXY": proxy.url, "NO_PROXY": "127.0.0.1,localhost",
            **(env or {}),
        }
        return subprocess.run([crane_binary, *args], env=client_env, capture_output=True, text=True,
                              timeout=120, check=False)

    return run


def token_calls(stub: StubClient) -> list[dict[str, Any]]:
    return [c for c in stub.calls() if c["action"] == "GetAuthorizationToken"]


def pulled_digest(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("config", [CRED_HELPERS, {"credsStore": "ecr-login"}], ids=["credHelpers", "credsStore"])
def test_crane_pulls_from_private_ecr_with_the_helpers_token(
    crane: Crane, stub: StubClient, registry: RegistryServer, proxy: ConnectProxy, config: dict[str, Any]
) -> None:
    result = crane("digest", f"{HOST}/{REPOSITORY}:{TAG}", config=config)
    assert pulled_digest(result) == registry.digest
    [call] = stub.calls("ecr")
    assert call["registry_ids"] == ["123456789012"] and call["region"] == "us-east-1"
    assert f"{HOST}:443" in proxy.requested
    manifest = json.loads(crane("manifest", f"{HOST}/{REPOSITORY}:{TAG}", config=config).stdout)
    assert manifest["schemaVersion"] == 2 and len(token_calls(stub)) == 1  # the second run: our cache


def test_crane_pulls_from_public_ecr_with_the_helpers_token(
    crane: Crane, stub: StubClient, registry: RegistryServer
) -> None:
    assert pulled_digest(crane("digest", f"{PUBLIC}/{REPOSITORY}:{TAG}")) == registry.digest
    assert [c["service"] for c in token_calls(stub)] == ["ecr-public"]


def test_crane_pushes_with_the_helpers_token(crane: Crane, stub: StubClient, tmp_path: Path) -> None:
    layer = tmp_path / "layer.tar"
    content = tmp_path / "build-output.txt"
    content.write_text("built by CI\n")
    with tarfile.open(layer, "w") as archive:
        archive.add(content, arcname="build-output.txt")
    pushed = crane("append", "--new_layer", str(layer), "--new_tag", f"{HOST}/team/ci:1")
    assert pushed.returncode == 0, pushed.stderr
    assert pulled_digest(crane("digest", f"{HOST}/team/ci:1")) == pushed.stdout.strip().rpartition("@")[2]
    assert len(token_calls(stub)) == 1


@pytest.mark.parametrize("config", [CRED_HELPERS, {"credsStore": "ecr-login"}], ids=["credHelpers", "credsStore"])
@pytest.mark.parametrize("name", [LOOKALIKE, FOREIGN])
def test_look_alike_and_foreign_hosts_get_no_token_and_the_client_goes_anonymous(
    crane: Crane, stub: StubClient, name: str, config: dict[str, Any]
) -> None:
    result = crane("digest", f"{name}/{REPOSITORY}:{TAG}", config=config)
    # The helper said "not found", crane went on without credentials, and the registry refused it.
    assert result.returncode != 0
    assert "UNAUTHORIZED" in result.stderr and "error getting credentials" not in result.stderr
    assert stub.calls() == []


def test_the_registry_refuses_a_token_it_does_not_know(crane: Crane, stub: StubClient) -> None:
    stub.configure(password=None)  # a random password, as for any other test
    result = crane("digest", f"{HOST}/{REPOSITORY}:{TAG}")
    assert result.returncode != 0 and "UNAUTHORIZED" in result.stderr
    assert len(token_calls(stub)) == 1


def test_a_token_the_kubelet_mode_cached_serves_the_client(
    crane: Crane, stub: StubClient, registry: RegistryServer, provider_cmd: list[str], provider_env: dict[str, str]
) -> None:
    kubelet = subprocess.run(provider_cmd, input=json.dumps(make_request(f"{HOST}/{REPOSITORY}")) + "\n",
                             env=provider_env, capture_output=True, text=True, timeout=70, check=False)
    assert kubelet.returncode == 0, kubelet.stderr
    assert pulled_digest(crane("digest", f"{HOST}/{REPOSITORY}:{TAG}")) == registry.digest
    assert len(token_calls(stub)) == 1


def test_access_denied_reaches_the_client_as_one_clean_line(crane: Crane, stub: StubClient) -> None:
    stub.configure(deny=True)
    result = crane("digest", f"{HOST}/{REPOSITORY}:{TAG}")
    assert result.returncode != 0
    assert "docker-credential-ecr-login: ecr:GetAuthorizationToken in us-east-1 failed: AccessDeniedException" \
        in result.stderr
    assert FAKE_SECRET_ACCESS_KEY not in result.stderr and "Traceback" not in result.stderr
