"""A local stand-in for EC2 instance metadata (IMDSv2) and the container credentials endpoint.

botocore reaches it through ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` and
``AWS_CONTAINER_CREDENTIALS_FULL_URI``; it listens on 127.0.0.1 only. The role it serves (and the
access key id of the credentials for that role) can be switched while it runs, which is how the
tests change "the instance role behind instance metadata" (and the account of its instance
profile) or "the container-credentials role".
"""

from __future__ import annotations

import json
import secrets
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
