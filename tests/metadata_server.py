"""A local stand-in for EC2 instance metadata (IMDSv2) and the container credentials endpoint.

botocore reaches it through ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` and
``AWS_CONTAINER_CREDENTIALS_FULL_URI``; it listens on 127.0.0.1 only. The role it serves (and the
access key id of the credentials for that role) can be switched while it runs, which is how the
tests change "the instance role behind instance metadata" (and the account of its instance
profile) or "the container-credentials role".
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

IMDS_ROLES = "/latest/meta-data/iam/security-credentials/"
IMDS_INFO = "/latest/meta-data/iam/info"
CONTAINER_PATH = "/container/credentials"


class MetadataServer:
    def __init__(self) -> None:
        self.role = "node-role-a"
        self.account = "111122223333"
        self.access_key_id = "ASIAMETADATAKEYA0001"
        self.container_role_arn: str | None = "arn:aws:iam::123456789012:role/task-a"
        self.requests: list[str] = []
        # True: the role listing fails (500) for the plugin's own look-ups until botocore's first
        # one, as when instance metadata fails for a moment while the runs name the node identity.
        self.naming_fails = False
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def serve(self, role: str, access_key_id: str, container_role_arn: str | None = None,
              account: str = "111122223333") -> None:
        with self._lock:
            self.role, self.access_key_id, self.container_role_arn = role, access_key_id, container_role_arn
            self.account = account

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _credentials(self) -> dict[str, Any]:
        expires = datetime.fromtimestamp(time.time() + 6 * 3600, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._lock:
            return {
                "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": self.access_key_id,
                "SecretAccessKey": "metadataSECRET/" + secrets.token_urlsafe(20),
                "Token": "metadatasession-" + secrets.token_urlsafe(30), "Expiration": expires,
                **({"RoleArn": self.container_role_arn} if self.container_role_arn else {}),
            }

    def start(self) -> MetadataServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                outer.requests.append(f"PUT {self.path}")
                if self.path == "/latest/api/token":
                    self._send(200, b"imds-session-token")
                else:
                    self._send(404, b"")

            def do_GET(self) -> None:
                outer.requests.append(f"GET {self.path}")
                with outer._lock:
                    role, account = outer.role, outer.account
                if self.path == IMDS_ROLES:
                    if "botocore" in self.headers.get("User-Agent", "").lower():
                        outer.naming_fails = False
                    if outer.naming_fails:
                        self._send(500, b"")
                    else:
                        self._send(200, role.encode())
                elif self.path == IMDS_INFO:
                    self._send(200, json.dumps({
                        "Code": "Success", "LastUpdated": "2026-12-01T00:00:00Z",
                        "InstanceProfileArn": f"arn:aws:iam::{account}:instance-profile/{role}-profile",
                        "InstanceProfileId": "AIPA" + account}).encode())
                elif self.path == IMDS_ROLES + role:
                    self._send(200, json.dumps({k: v for k, v in outer._credentials().items()
                                                if k != "RoleArn"}).encode())
                elif self.path == CONTAINER_PATH:
                    self._send(200, json.dumps(outer._credentials()).encode())
                else:
                    self._send(404, b"")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class RawServer:
    """Answers each connection with raw bytes, whatever they are: `answers[path]` for the path asked, else
    `answer`, then closes it (or, with `keep_open`, waits for the client to close it first, as a server that
    ignores `Connection: close`). `requests`: each request's head, as it came."""

    def __init__(self, answer: bytes = NOT_FOUND, keep_open: bool = False) -> None:
        self.answer = answer
        self.answers: dict[str, bytes] = {}
        self.keep_open = keep_open
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                path = data.split(b" ", 2)[1].decode() if data.count(b" ") >= 2 else ""
                with contextlib.suppress(OSError):  # a client that stopped reading (a body past its limit)
                    connection.sendall(self.answers.get(path, self.answer))
                    while self.keep_open and connection.recv(4096):
                        pass

    def close(self) -> None:
        self.listener.close()
