"""Real clients (crane; skopeo for the containers/image family of podman and buildah) configured through
`config.json` with our helper, against a real registry (`registry_server.py`: Debian's docker-registry,
TLS, htpasswd whose password is the one the AWS stub issues) under ECR names. The credentials are proven
by the registry accepting them, not only printed.

The client reaches the registry through `connect_proxy.py` (names mapped to loopback; see there why).
Marked e2e: CI runs it against the built binary too. crane, skopeo and docker-registry come from
scripts/setup; without them the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import hashlib
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
from helpers import StubClient, install_docker_helper, make_request, require_tool
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
CREDS_STORE = {"credsStore": "ecr-login"}
# containers/image (skopeo, podman, buildah) reads credHelpers, not credsStore.
CLIENT_CONFIGS = [pytest.param("crane", CRED_HELPERS, id="crane-credHelpers"),
                  pytest.param("skopeo", CRED_HELPERS, id="skopeo-credHelpers"),
                  pytest.param("crane", CREDS_STORE, id="crane-credsStore")]


@pytest.fixture
def client_env(provider_cmd: list[str], provider_env: dict[str, str], registry: RegistryServer,
               proxy: ConnectProxy, docker_config: Callable[[dict[str, Any]], Path], tmp_path: Path,
               stub: StubClient) -> Callable[[dict[str, Any] | None], dict[str, str]]:
    """A client's environment: our executable installed as `docker-credential-ecr-login` on its PATH,
    a config.json naming it, the test CA, and the proxy that maps the registry names to loopback."""
    bin_dir = install_docker_helper(provider_cmd, tmp_path / "bin").parent
    stub.configure(password=PASSWORD)

    def make(config: dict[str, Any] | None) -> dict[str, str]:
        directory = docker_config(CRED_HELPERS if config is None else config)
        return {
            **provider_env,  # the AWS side: the helper inherits it from the client, as on a CI runner
            "PATH": f"{bin_dir}{os.pathsep}{provider_env['PATH']}",
            "DOCKER_CONFIG": str(directory),  # crane, docker
            "REGISTRY_AUTH_FILE": str(directory / "config.json"),  # skopeo, podman, buildah: same format
            "SSL_CERT_FILE": str(registry.ca_file),
            "HTTPS_PROXY": proxy.url, "NO_PROXY": "127.0.0.1,localhost",
        }

    return make


@pytest.fixture
def crane(crane_binary: str, client_env: Callable[[dict[str, Any] | None], dict[str, str]]) -> Crane:
    def run(*args: str, config: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([crane_binary, *args], env=client_env(config), capture_output=True, text=True,
                              timeout=120, check=False)

    return run


Pull = Callable[..., tuple[int, str, str]]


@pytest.fixture(params=["crane", "skopeo"])
def pull(request: pytest.FixtureRequest, client_env: Callable[[dict[str, Any] | None], dict[str, str]]) -> Pull:
    """Fetch an image's manifest with a real client: (exit code, manifest digest, the client's stderr)."""
    if request.param == "crane":
        tool = request.getfixturevalue("crane_binary")
    else:
        tool = require_tool("skopeo", shutil.which("skopeo"))

    def run(reference: str, config: dict[str, Any] | None = None) -> tuple[int, str, str]:
        if request.param == "crane":
            cmd = [tool, "digest", reference]
        else:
            cmd = [tool, "inspect", "--raw", f"docker://{reference}"]
        result = subprocess.run(cmd, env=client_env(config), capture_output=True, timeout=120, check=False)
        stdout = result.stdout.strip()
        digest = stdout.decode() if request.param == "crane" else "sha256:" + hashlib.sha256(stdout).hexdigest()
        return result.returncode, digest if result.returncode == 0 else "", result.stderr.decode()

    return run


def token_calls(stub: StubClient) -> list[dict[str, Any]]:
    return [c for c in stub.calls() if c["action"] == "GetAuthorizationToken"]


def pulled_digest(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(("pull", "config"), CLIENT_CONFIGS, indirect=["pull"])
def test_clients_pull_from_private_ecr_with_the_helpers_token(
    pull: Pull, stub: StubClient, registry: RegistryServer, proxy: ConnectProxy, config: dict[str, Any]
) -> None:
    code, digest, stderr = pull(f"{HOST}/{REPOSITORY}:{TAG}", config)
    assert (code, digest) == (0, registry.digest), stderr
    [call] = stub.calls("ecr")
    assert call["registry_ids"] == ["123456789012"] and call["region"] == "us-east-1"
    assert f"{HOST}:443" in proxy.requested
    assert pull(f"{HOST}/{REPOSITORY}:{TAG}", config)[:2] == (0, registry.digest)
    assert len(token_calls(stub)) == 1  # the second run: our cache


def test_clients_pull_from_public_ecr_with_the_helpers_token(
    pull: Pull, stub: StubClient, registry: RegistryServer
) -> None:
    code, digest, stderr = pull(f"{PUBLIC}/{REPOSITORY}:{TAG}")
    assert (code, digest) == (0, registry.digest), stderr
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


@pytest.mark.parametrize(("pull", "config"), CLIENT_CONFIGS, indirect=["pull"])
@pytest.mark.parametrize("name", [LOOKALIKE, FOREIGN])
def test_look_alike_and_foreign_hosts_get_no_token_and_the_client_goes_anonymous(
    pull: Pull, stub: StubClient, name: str, config: dict[str, Any]
) -> None:
    code, _, stderr = pull(f"{name}/{REPOSITORY}:{TAG}", config)
    # The helper said "not found", the client went on without credentials, and the registry refused it.
    assert code != 0
    assert "unauthorized" in stderr.lower() and "error getting credentials" not in stderr
    assert stub.calls() == []


def test_the_registry_refuses_a_token_it_does_not_know(pull: Pull, stub: StubClient) -> None:
    stub.configure(password=None)  # a random password, as for any other test
    code, _, stderr = pull(f"{HOST}/{REPOSITORY}:{TAG}")
    assert code != 0 and "unauthorized" in stderr.lower()
    assert len(token_calls(stub)) == 1


def test_a_token_the_kubelet_mode_cached_serves_the_client(
    pull: Pull, stub: StubClient, registry: RegistryServer, provider_cmd: list[str], provider_env: dict[str, str]
) -> None:
    kubelet = subprocess.run(provider_cmd, input=json.dumps(make_request(f"{HOST}/{REPOSITORY}")) + "\n",
                             env=provider_env, capture_output=True, text=True, timeout=70, check=False)
    assert kubelet.returncode == 0, kubelet.stderr
    assert pull(f"{HOST}/{REPOSITORY}:{TAG}")[:2] == (0, registry.digest)
    assert len(token_calls(stub)) == 1


@pytest.fixture(scope="session")
def public_registry() -> Iterator[tuple[RegistryServer, ConnectProxy]]:
    """Public ECR as it is: a registry that serves pulls without credentials, under its own name."""
    require_tool("docker-registry", REGISTRY_BINARY or None)
    with RegistryServer(PASSWORD, [PUBLIC], anonymous=True) as server:
        proxy = ConnectProxy({PUBLIC: server.port}).start()
        yield server, proxy
        proxy.stop()


@pytest.mark.parametrize("client", ["crane", "skopeo"])
@pytest.mark.parametrize("case", ["no-aws-credentials", "denied", "throttled"])
def test_a_public_image_is_pulled_anonymously_when_aws_gives_no_token(
    client: str, case: str, crane_binary: str, public_registry: tuple[RegistryServer, ConnectProxy],
    client_env: Callable[[dict[str, Any] | None], dict[str, str]], stub: StubClient
) -> None:
    """A machine with `credsStore`/`credHelpers: ecr-login` and no (usable) AWS credentials still pulls
    public images: the helper answers "not found" and the client goes on anonymously."""
    server, proxy = public_registry
    env = {**client_env(None), "SSL_CERT_FILE": str(server.ca_file), "HTTPS_PROXY": proxy.url,
           "AWS_MAX_ATTEMPTS": "1", "ECR_KUBELET_TIMEOUT": "3s"}
    if case == "no-aws-credentials":
        env = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    else:
        stub.configure(**({"deny": True} if case == "denied" else {"throttle_next": 1000}))
    reference = f"{PUBLIC}/{REPOSITORY}:{TAG}"
    if client == "crane":
        cmd = [crane_binary, "digest", reference]
    else:
        cmd = [require_tool("skopeo", shutil.which("skopeo")), "inspect", "--raw", f"docker://{reference}"]
    result = subprocess.run(cmd, env=env, capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode()
    digest = result.stdout.decode().strip() if client == "crane" else \
        "sha256:" + hashlib.sha256(result.stdout.strip()).hexdigest()
    assert digest == server.digest
    assert f"{PUBLIC}:443" in proxy.requested


def test_access_denied_reaches_the_client_as_one_clean_line(pull: Pull, stub: StubClient) -> None:
    stub.configure(deny=True)
    code, _, stderr = pull(f"{HOST}/{REPOSITORY}:{TAG}")
    assert code != 0
    assert "docker-credential-ecr-login: ecr:GetAuthorizationToken in us-east-1 failed: AccessDeniedException" \
        in stderr
    assert FAKE_SECRET_ACCESS_KEY not in stderr and "Traceback" not in stderr
