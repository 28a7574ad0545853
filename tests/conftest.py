"""Shared pytest fixtures: the AWS stub, moto, and a way to run the plugin like the kubelet does."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bundle import Bundle
from helpers import RunProvider, StubClient
from stub_server import StubServer

ROOT = Path(__file__).resolve().parent.parent
FAKE_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
FAKE_SECRET_ACCESS_KEY = "stubSECRET/DoNotLeak+wJalrXUtnFEMI/K7MDENG"


# ---- AWS stub ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def stub_server() -> Iterator[StubServer]:
    server = StubServer().start()
    yield server
    server.stop()


@pytest.fixture
def stub(stub_server: StubServer) -> StubClient:
    client = StubClient(stub_server.url)
    client.reset()
    return client


# ---- moto -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _moto_reset(url: str) -> None:
    req = urllib.request.Request(url + "/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10):
        pass


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _moto_reset(url)
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start on {url} (see {log.name})")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def moto(moto_server: str) -> str:
    _moto_reset(moto_server)
    return moto_server


# ---- running the plugin -----------------------------------------------------------------------


@pytest.fixture
def provider_env(tmp_path: Path, stub: StubClient) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-such-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-such-aws-credentials"),
        "AWS_ENDPOINT_URL_ECR": stub.url,
        "AWS_ENDPOINT_URL_ECR_PUBLIC": stub.url,
        "AWS_ENDPOINT_URL_STS": stub.url,
        "ECR_KUBELET_CACHE_DIR": str(tmp_path / "cache"),
        "ECR_KUBELET_RUNTIME_DIR": f"{os.environ.get('TMPDIR') or '/tmp'}/ecr-kubelet-runtime-{os.geteuid()}",
    }


@pytest.fixture(scope="session")
def provider_cmd() -> list[str]:
    binary = os.environ.get("ECR_KUBELET_TEST_BINARY")
    if binary:
        if not os.access(binary, os.X_OK):
            pytest.fail(f"ECR_KUBELET_TEST_BINARY={binary!r} is not an executable file")
        binary = str(Path(binary).resolve())
        root = os.environ.get("ECR_KUBELET_TEST_ROOT")
        if root:
            root = str(Path(root).resolve())  # tests run the command from other working directories
            # Inside a bare Debian root (scripts/make-root) of the binary's architecture, with the
            # tests' temporary directories and the binary's own directory at the same paths.
            if not (Path(root) / ".ecr-root-stamp").is_file():
                pytest.fail(f"ECR_KUBELET_TEST_ROOT={root!r} is not a root made by scripts/make-root")
            tmp = os.environ.get("TMPDIR") or "/tmp"
            return [str(ROOT / "scripts" / "in-root"), "--bind", tmp, "--bind", str(Path(binary).parent), root, binary]
        return [binary]
    script = Path(sys.executable).parent / "ecr-credential-provider"
    if not script.exists():
        found = shutil.which("ecr-credential-provider")
        pytest.fail(
            f"console script {script} is missing (install the project: pip install -e '.[test]')"
            + (f"; note: one exists at {found} but is not next to this interpreter" if found else "")
        )
    return [str(script)]


def _encode_request(request: dict[str, Any] | str | bytes) -> bytes:
    if isinstance(request, bytes):
        return request
    if isinstance(request, str):
        return request.encode()
    return (json.dumps(request, separators=(",", ":")) + "\n").encode()


@pytest.fixture
def run_provider(provider_cmd: list[str], provider_env: dict[str, str]) -> RunProvider:
    def run(
        request: dict[str, Any] | str | bytes,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 70,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [*provider_cmd, *args]
        proc = subprocess.run(
            cmd,
            input=_encode_request(request),
            env=env if env is not None else provider_env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return subprocess.CompletedProcess(
            cmd,
            proc.returncode,
            proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"),
        )

    return run


# ---- the built binary (tests/test_binary.py, tests/test_launcher.py) ---------------------------


@pytest.fixture(scope="module")
def binary() -> Path:
    override = os.environ.get("ECR_KUBELET_TEST_BINARY")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    # The newest of a local build (scripts/build-binary) and this machine's release binary.
    candidates = [p for p in (ROOT / "dist" / "ecr-credential-provider",
                              ROOT / "dist" / "release" / f"ecr-credential-provider-linux-{arch}") if p.exists()]
    default = max(candidates, key=lambda p: p.stat().st_mtime, default=ROOT / "dist" / "ecr-credential-provider")
    path = Path(override) if override else default
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is not built: CI runs scripts/release before the tests")
        pytest.skip(f"{path} is not built (run scripts/build-binary)")
    return path


@pytest.fixture(scope="module")
def bundle(binary: Path) -> Bundle:
    try:
        return Bundle(binary)
    except ValueError as exc:
        pytest.skip(f"not a binary built by scripts/build-binary: {exc}")


@pytest.fixture(scope="module")
def launcher(bundle: Bundle) -> Bundle:
    if not bundle.launcher:
        pytest.skip("a PyInstaller one-file build (--onefile), not the unpack-once launcher")
    return bundle
