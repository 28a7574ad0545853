"""Helpers shared by the tests: ``from helpers import make_request, make_jwt, StubClient, RunProvider``.

``StubClient`` and ``RunProvider`` are the types of the ``stub`` and ``run_provider`` fixtures.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import secrets
import shlex
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

API_V1 = "credentialprovider.kubelet.k8s.io/v1"


def make_request(image: str, api_version: str = API_V1, **extra: Any) -> dict[str, Any]:
    """A CredentialProviderRequest as the kubelet sends it; ``extra`` keys are added verbatim
    (e.g. ``serviceAccountToken=...``, ``serviceAccountAnnotations={...}``)."""
    return {"kind": "CredentialProviderRequest", "apiVersion": api_version, "image": image, **extra}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(
    sub: str,
    iss: str = "https://oidc.example.test",
    aud: str = "sts.amazonaws.com",
    exp_in: int = 3600,
) -> str:
    """A well-formed (but not validly signed) 3-part JWT, like a projected service account token."""
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": "stub-key"}
    payload = {"iss": iss, "sub": sub, "aud": aud, "iat": now, "nbf": now, "exp": now + exp_in}
    return ".".join(
        [
            _b64url(json.dumps(header, separators=(",", ":")).encode()),
            _b64url(json.dumps(payload, separators=(",", ":")).encode()),
            _b64url(secrets.token_bytes(64)),
        ]
    )


class StubClient:
    """Talks to a running stub server through its ``/_stub/`` control endpoints."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def calls(self, service: str | None = None, action: str | None = None) -> list[dict[str, Any]]:
        """Recorded AWS calls, oldest first, optionally filtered by service and/or action."""
        records: list[dict[str, Any]] = self._request("GET", "/_stub/calls")
        return [
            r
            for r in records
            if (service is None or r["service"] == service) and (action is None or r["action"] == action)
        ]

    def callers(self) -> list[str]:
        """The access key ids that have called the stub so far, each once, sorted."""
        result: list[str] = self._request("GET", "/_stub/callers")
        return result

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Merge settings (see ``stub_server.DEFAULT_CONFIG``); returns the full effective config."""
        result: dict[str, Any] = self._request("POST", "/_stub/config", settings)
        return result

    def reset(self) -> None:
        self._request("POST", "/_stub/reset", {})


class RunProvider(Protocol):
    def __call__(
        self,
        request: dict[str, Any] | str | bytes,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 70,
    ) -> subprocess.CompletedProcess[str]: ...


def blocked_waiters(path: Path) -> int:
    """Processes blocked waiting for a lock on `path` (the kernel's /proc/locks lists them with `->`): the
    event a test waits for before it lets a lock go, instead of a guessed delay."""
    inode = path.stat().st_ino
    return sum(1 for line in Path("/proc/locks").read_text().splitlines()
               if "->" in line and line.split()[-3].endswith(f":{inode}"))


def flocks_held(path: Path) -> list[str]:
    """The flocks held on `path` (READ: shared, WRITE: exclusive), as /proc/locks lists them; waiters
    (`->`) are not holders."""
    inode = path.stat().st_ino
    return sorted(line.split()[3] for line in Path("/proc/locks").read_text().splitlines()
                  if "->" not in line and line.split()[1] == "FLOCK" and line.split()[-3].endswith(f":{inode}"))


def require_tool(name: str, found: str | None) -> str:
    """A tool a test needs: its path, else a skip locally and a failure in CI (scripts/setup installs it)."""
    import os

    import pytest

    if found:
        return found
    message = f"{name} is not installed (scripts/setup installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def install_docker_helper(provider_cmd: list[str], bin_dir: Path) -> Path:
    """`docker-credential-ecr-login` in bin_dir as users install it: a symlink to our executable.
    When the executable runs inside a test root (provider_cmd is scripts/in-root ... BINARY), the
    symlink sits beside a small wrapper of that name that runs it there, so host clients can call it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    name = "docker-credential-ecr-login"
    if len(provider_cmd) == 1:
        (bin_dir / name).symlink_to(provider_cmd[0])
        return bin_dir / name
    real = bin_dir / "in-root"
    real.mkdir()
    (real / name).symlink_to(provider_cmd[-1])
    wrapper = bin_dir / name
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in [*provider_cmd[:-1], str(real / name)])
                       + ' "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


RELEASE_DIR = Path(os.environ.get("ECR_KUBELET_RELEASE_DIR")
                   or Path(__file__).resolve().parent.parent / "dist" / "release")


def require_built(path: Path, how: str) -> Path:
    """A build output a test needs: skipped when missing, but a failure under CI (which builds it)."""
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: {how}")
        pytest.skip(f"{path} is missing ({how})")
    return path


def binary_is_emulated() -> bool:
    """Whether the command under test is a binary of another architecture (ECR_KUBELET_TEST_BINARY, run by
    qemu-user through binfmt_misc): there a process's start time in /proc is when qemu started it, after
    the last exec, so what ran before the exec in the same process is not seen."""
    binary = os.environ.get("ECR_KUBELET_TEST_BINARY")
    if not binary:
        return False
    with open(binary, "rb") as handle:
        header = handle.read(20)
    machine = int.from_bytes(header[18:20], "little")  # ELF e_machine
    return {0x3E: "x86_64", 0xB7: "aarch64"}.get(machine) != platform.machine()


def run_released_together(cmd: list[str], env: dict[str, str], outputs: Path,
                          requests: list[dict[str, Any]]) -> list[subprocess.CompletedProcess[str]]:
    """One run per request, all started first (each blocks reading its request), then released at
    once, as the kubelet starts them at node boot; the kubelet's 60 s is the bound."""
    outputs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(len(requests)):
            with (outputs / f"{i}.out").open("wb") as out, (outputs / f"{i}.err").open("wb") as err:
                procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=out, stderr=err))
        for proc, request in zip(procs, requests, strict=True):
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.close()
        codes = [proc.wait(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [subprocess.CompletedProcess(cmd, code, (outputs / f"{i}.out").read_text(),
                                        (outputs / f"{i}.err").read_text()) for i, code in enumerate(codes)]


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run `call` in a daemon thread; its result, or what it raised, lands in the list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome
