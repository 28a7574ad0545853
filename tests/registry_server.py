#!/usr/bin/env python3
"""A real container registry (Debian's `docker-registry`, the distribution registry) for the end-to-end
tests: TLS from a throwaway CA, htpasswd auth for user `AWS` with the password the AWS stub is told to
issue, on 127.0.0.1 only, seeded with one small image. It answers to ECR-looking names (the server
certificate carries them); the clients reach it through `connect_proxy.py` or a dialer that maps those
names to loopback, so no name is ever resolved and nothing leaves the machine.

Used by pytest (`RegistryServer`) and by the Go kubelet conformance test, which runs it with the
project's virtualenv python (it needs `cryptography` and `bcrypt`):

    registry_server.py --password PW --name HOST [--name HOST ...]

prints one JSON line (`port`, `ca`, `repository`, `tag`, `digest`), then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import gzip
import hashlib
import http.client
import io
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REGISTRY_BINARY = os.environ.get("ECR_KUBELET_REGISTRY_BINARY") or shutil.which("docker-registry") or ""
USERNAME = "AWS"  # what ECR tokens carry
REPOSITORY = "team/app"
TAG = "v1"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


class RegistryServer:
    """`start()` runs the registry; `port`, `ca_file`, `digest` describe it; `stop()` ends it."""

    def __init__(self, password: str, names: list[str], *, anonymous: bool = False) -> None:
        self.password = password
        self.names = names
        self.anonymous = anonymous  # no auth at all, as public ECR serves pulls without credentials
        self.port = 0
        self.digest = ""
        self._dir = Path(tempfile.mkdtemp(prefix="ecr-kubelet-registry-"))
        self.ca_file = self._dir / "ca.pem"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RegistryServer:
        if not REGISTRY_BINARY:
            raise RuntimeError("docker-registry not found (Debian package docker-registry; scripts/setup installs it)")
        self._write_tls()
        self._write_htpasswd()
        for _attempt in range(3):  # the free port we picked may be taken before the registry binds it
            self.port = _free_port()
            self._proc = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(self._write_config())],
                # The registry reads REGISTRY_* overrides from its environment: give it none.
                env={k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "OTEL_"))},
                stdout=(self._dir / "registry.log").open("ab"), stderr=subprocess.STDOUT,
            )
            if self._wait_ready():
                self.digest = self._seed()
                return self
        self.stop()
        raise RuntimeError(f"docker-registry did not start; see {self._dir / 'registry.log'}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def info(self) -> dict[str, Any]:
        return {"port": self.port, "ca": str(self.ca_file), "repository": REPOSITORY, "tag": TAG,
                "digest": self.digest}

    # ---- set-up --------------------------------------------------------------------------------

    def _write_tls(self) -> None:
        make_tls(self._dir, self.names)

    def _write_htpasswd(self) -> None:
        import bcrypt  # the registry accepts bcrypt entries only

        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (self._dir / "htpasswd").write_text(f"{USERNAME}:{hashed}\n")

    def _write_config(self) -> Path:
        config: dict[str, Any] = {  # JSON is YAML
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self._dir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": secrets.token_hex(16),
                     "tls": {"certificate": str(self._dir / "server.pem"), "key": str(self._dir / "server.key")}},
        }
        if not self.anonymous:
            config["auth"] = {"htpasswd": {"realm": "ecr-kubelet-test", "path": str(self._dir / "htpasswd")}}
        path = self._dir / "config.yml"
        path.write_text(json.dumps(config))
        return path

    def _connection(self) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=10)

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                conn = self._connection()
                conn.request("GET", "/v2/")
                status = conn.getresponse().status
                conn.close()
                if status == (200 if self.anonymous else 401):  # up, and asking for credentials unless anonymous
                    return True
            except OSError:
                pass
            time.sleep(0.05)  # start-up poll only; no test result depends on it
        return False

    def _request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
                 ) -> http.client.HTTPResponse:
        auth = base64.b64encode(f"{USERNAME}:{self.password}".encode()).decode()
        conn = self._connection()
        conn.request(method, path, body=body, headers={"Authorization": f"Basic {auth}", **(headers or {})})
        response = conn.getresponse()
        response.read()
        conn.close()
        if response.status >= 300:
            raise RuntimeError(f"registry answered {response.status} to {method} {path}")
        return response

    def _upload(self, blob: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        started = self._request("POST", f"/v2/{REPOSITORY}/blobs/uploads/")
        location = started.headers["Location"]
        location = location.split("://", 1)[1].split("/", 1)[1] if "://" in location else location.lstrip("/")
        separator = "&" if "?" in location else "?"
        self._request("PUT", f"/{location}{separator}digest={digest}", blob,
                      {"Content-Type": "application/octet-stream"})
        return digest

    def _seed(self) -> str:
        """One image with one small layer, pushed with the registry's own credentials."""
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w") as archive:
            data = b"hello from ecr-kubelet\n"
            member = tarfile.TarInfo("hello.txt")
            member.size, member.mtime = len(data), 0
            archive.addfile(member, io.BytesIO(data))
        layer = gzip.compress(tar.getvalue(), mtime=0)
        image_config = json.dumps({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar.getvalue()).hexdigest()]},
        }).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": len(image_config), "digest": self._upload(image_config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(layer), "digest": self._upload(layer)}],
        }).encode()
        self._request("PUT", f"/v2/{REPOSITORY}/manifests/{TAG}", manifest, {"Content-Type": MANIFEST_TYPE})
        return "sha256:" + hashlib.sha256(manifest).hexdigest()


def make_tls(directory: Path, names: list[str]) -> None:
    """A throwaway CA (`ca.pem`) and a server certificate for `names` and 127.0.0.1 (`server.pem`,
    `server.key`) in `directory`, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ecr-kubelet test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))  # for seeding the registry directly
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A real registry with TLS and htpasswd auth, for tests")
    parser.add_argument("--password", required=True, help="password of user AWS")
    parser.add_argument("--name", action="append", required=True, help="a host name the certificate carries")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with RegistryServer(args.password, args.name) as server:
        print(json.dumps(server.info()), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
