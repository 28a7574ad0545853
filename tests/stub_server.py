#!/usr/bin/env python3
"""A small local stand-in for the AWS APIs the credential provider talks to.

Standard library only: this file is also run directly (``python3 tests/stub_server.py``)
by the Go kubelet test and the benchmark, with whatever python3 is on the machine.

One port serves:

* ECR ``GetAuthorizationToken`` (JSON 1.1, ``X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.*``)
* ECR Public ``GetAuthorizationToken`` (JSON 1.1, ``X-Amz-Target: SpencerFrontendService.*``)
* STS ``AssumeRole``, ``AssumeRoleWithWebIdentity``, ``GetCallerIdentity`` (AWS query protocol:
  form-encoded POST, XML answers; that is what botocore's STS model declares)
* EKS Auth ``AssumeRoleForPodIdentity`` (REST-JSON: ``POST /clusters/{clusterName}/assume-role-for-pod-identity``
  with ``{"token": ...}``, as botocore's eks-auth model declares), answering for the pod identity
  associations set with ``pod_identity_associations``; the credentials it issues belong to the associated
  role's account (so the stub's ECR attributes their tokens to it); with ``password_pod_identity_only`` only
  those credentials get the configured ``password``
* control endpoints under ``/_stub/``: ``GET /_stub/calls``, ``GET /_stub/callers`` (the access key
  ids that have called so far: cheap to poll), ``POST /_stub/reset``, ``POST /_stub/config``, ``GET /_stub/health``

The caller's region and access key id come from the SigV4 ``Authorization`` header's
credential scope. Static (non-``ASIA``) keys belong to ``DEFAULT_ACCOUNT_ID``; keys issued by
the stub's STS belong to the account in the assumed role's ARN. ECR calls without
``registryIds`` get one entry for the caller's account.

Every ECR / ECR Public call issues a fresh random password, recorded in the call log next to
the caller's access key id and region, so tests can tell which identity fetched which token.
Web identity tokens are decoded (no signature check) and only ``iss``/``sub``/``aud`` are
recorded, never the token itself.

Usage: ``python3 tests/stub_server.py [--host 127.0.0.1] [--port 0] [--verbose]`` prints exactly
one line ``http://HOST:PORT`` on stdout, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import secrets
import signal
import string
import sys
import threading
import time
import types
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

#: Account that owns the fake static credentials (any key id not issued by the stub's STS).
DEFAULT_ACCOUNT_ID = "123456789012"
#: ECR token lifetime unless configured otherwise (12 h, like the real service).
DEFAULT_TOKEN_LIFETIME_SECONDS = 43200
#: STS credential lifetime unless the request asks for ``DurationSeconds``.
DEFAULT_STS_LIFETIME_SECONDS = 3600
#: The token returned when ``malformed_token`` is ``True``: not base64, and no ``user:password`` inside.
MALFORMED_TOKEN = "%%not-base64%%"

POD_IDENTITY_AUDIENCE = "pods.eks.amazonaws.com"
EKS_AUTH_PATH_RE = re.compile(r"^/clusters/([^/]+)/assume-role-for-pod-identity$")
ECR_TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
ECR_PUBLIC_TARGET_PREFIX = "SpencerFrontendService."
STS_XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"

_CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request")
_ROLE_ARN_RE = re.compile(r"^arn:aws[\w-]*:iam::(\d{12}):role/(?:.*/)?([\w+=,.@-]+)$")

# Settings accepted by POST /_stub/config, with their defaults.
DEFAULT_CONFIG: dict[str, Any] = {
    "token_lifetime_seconds": DEFAULT_TOKEN_LIFETIME_SECONDS,
    "expires_at": None,  # absolute epoch seconds; may be in the past
    "omit_expires_at": False,
    "throttle_next": 0,  # next N ECR/ECR Public calls: 400 ThrottlingException
    "fail_next": 0,  # next N ECR/ECR Public calls: 500 ServerException
    "fail_all": False,  # every ECR/ECR Public call: 503 ServiceUnavailableException
    "deny": False,  # every ECR/ECR Public call: 400 AccessDeniedException
    "clock_skew": False,  # every ECR/ECR Public call: 403 InvalidSignatureException "Signature expired"
    "deny_web_identity": False,  # AssumeRoleWithWebIdentity: 403 AccessDenied
    "deny_assume_role": [],  # AssumeRole of these role ARNs ("*": every role): 403 AccessDenied
    "credentials_expire_at": None,  # absolute epoch seconds of every issued STS credential; may be in the past
    "delay_seconds": 0.0,  # sleep before answering ECR/ECR Public calls
    "malformed_token": False,  # True -> MALFORMED_TOKEN; a string -> that exact token
    "password": None,  # a string: every token carries this password (a real registry's htpasswd knows it)
    # True: only callers signing with credentials eks-auth issued get `password`; any other caller's token
    # carries a random one (a real registry refuses it), so a pull proves the Pod Identity role fetched it.
    "password_pod_identity_only": False,
    # ECR's GetAuthorizationToken quota, per account and region: {"rate": calls/s, "burst": N}, a
    # token bucket; calls over it get 400 ThrottlingException and consume nothing. None: unlimited.
    "rate_limit": None,
    # EKS Pod Identity: {cluster name: {"namespace/serviceaccount": role ARN}}. A cluster not listed, or a
    # service account without an entry, gets 404 ResourceNotFoundException, as from eks-auth.
    "pod_identity_associations": {},
    "pod_identity_lifetime_seconds": DEFAULT_STS_LIFETIME_SECONDS,  # life of the credentials eks-auth issues
    "throttle_eks_auth_next": 0,  # next N AssumeRoleForPodIdentity calls: 429 ThrottlingException
    "deny_pod_identity": False,  # AssumeRoleForPodIdentity: 400 AccessDeniedException (the node may not call it)
    "eks_auth_delay_seconds": 0.0,  # sleep before answering AssumeRoleForPodIdentity
    # > 0: each ECR/ECR Public call waits until this many calls are in flight at once (a barrier,
    # 30 s at most, then 500): proves that callers really are served concurrently.
    "barrier_parties": 0,
}


class StubError(Exception):
    """An AWS-style error answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Caller:
    access_key_id: str | None
    region: str | None
    service: str | None


@dataclass
class IssuedIdentity:
    account_id: str
    arn: str
    user_id: str
    issuer: str = "sts"  # who issued the key: "sts", "eks-auth", or "static" (not the stub)


def _random_id(prefix: str, length: int = 16) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def _iso8601(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def decode_jwt_claims(token: str) -> dict[str, Any]:
    """Return a JWT's payload without checking its signature; StubError if it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise StubError(400, "InvalidIdentityToken", "Token is not a valid JWT (expected 3 parts)")
    try:
        claims = json.loads(_b64url_decode(parts[1]))
    except (binascii.Error, ValueError) as exc:
        raise StubError(400, "InvalidIdentityToken", "Token payload is not valid JSON") from exc
    if not isinstance(claims, dict):
        raise StubError(400, "InvalidIdentityToken", "Token payload is not a JSON object")
    return claims


class StubState:
    """Call log, settings and issued identities; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []
        self._config: dict[str, Any] = dict(DEFAULT_CONFIG)
        self._identities: dict[str, IssuedIdentity] = {}
        self._generation = 0  # bumped by reset(): a call still in flight then belongs to an old test
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # (account, region) -> (tokens, at)
        self._barrier: threading.Barrier | None = None

    def generation(self) -> int:
        with self._lock:
            return self._generation

    def reset(self) -> None:
        with self._lock:
            self._generation += 1
            self._calls.clear()
            self._config = dict(DEFAULT_CONFIG)
            self._identities.clear()
            self._buckets.clear()
            if self._barrier is not None:
                self._barrier.abort()
            self._barrier = None

    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(settings) - set(DEFAULT_CONFIG))
        if unknown:
            raise StubError(400, "InvalidStubConfig", f"unknown setting(s): {', '.join(unknown)}")
        limit = settings.get("rate_limit")
        if limit is not None and not (
            isinstance(limit, dict) and set(limit) == {"rate", "burst"}
            and all(isinstance(limit[k], (int, float)) and limit[k] > 0 for k in limit)
        ):
            raise StubError(400, "InvalidStubConfig", "rate_limit must be null or {\"rate\": >0, \"burst\": >0}")
        with self._lock:
            self._config.update(settings)
            if "rate_limit" in settings:
                self._buckets.clear()
            if "barrier_parties" in settings:
                parties = int(settings["barrier_parties"] or 0)
                self._barrier = threading.Barrier(parties, timeout=30) if parties > 0 else None
            return dict(self._config)

    def wait_at_barrier(self) -> bool:
        """Wait for the configured number of concurrent calls; False if they never all arrived."""
        with self._lock:
            barrier = self._barrier
        if barrier is None:
            return True
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return False
        return True

    def config(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._config)

    def take_failure(self, generation: int | None = None, quota_key: tuple[str, str] | None = None) -> StubError | None:
        """Decide (atomically) whether the next ECR call fails, consuming one-shot counters.

        A call that started before the last reset belongs to an earlier test: it consumes nothing.
        """
        with self._lock:
            if generation is not None and generation != self._generation:
                return None
            cfg = self._config
            limit = cfg["rate_limit"]
            if limit is not None and quota_key is not None:
                now = time.monotonic()
                tokens, at = self._buckets.get(quota_key, (float(limit["burst"]), now))
                tokens = min(float(limit["burst"]), tokens + (now - at) * float(limit["rate"]))
                if tokens < 1.0:
                    self._buckets[quota_key] = (tokens, now)
                    return StubError(400, "ThrottlingException", "Rate exceeded")
                self._buckets[quota_key] = (tokens - 1.0, now)
            if cfg["fail_all"]:
                return StubError(503, "ServiceUnavailableException", "Service unavailable (stub outage)")
            if cfg["clock_skew"]:
                return StubError(
                    403, "InvalidSignatureException",
                    "Signature expired: 20260101T000000Z is now earlier than 20261201T000000Z "
                    "(20261201T000000Z - 5 min.)",
                )
            if cfg["deny"]:
                return StubError(
                    400, "AccessDeniedException", "User is not authorized to perform GetAuthorizationToken"
                )
            if int(cfg["throttle_next"]) > 0:
                cfg["throttle_next"] = int(cfg["throttle_next"]) - 1
                return StubError(400, "ThrottlingException", "Rate exceeded")
            if int(cfg["fail_next"]) > 0:
                cfg["fail_next"] = int(cfg["fail_next"]) - 1
                return StubError(500, "ServerException", "Internal server error (stub)")
            return None

    def take_eks_auth_throttle(self, generation: int) -> bool:
        """Whether this AssumeRoleForPodIdentity call is throttled (consumes one throttle_eks_auth_next)."""
        with self._lock:
            if generation != self._generation or int(self._config["throttle_eks_auth_next"]) <= 0:
                return False
            self._config["throttle_eks_auth_next"] = int(self._config["throttle_eks_auth_next"]) - 1
            return True

    def record(self, call: dict[str, Any]) -> None:
        """Log a call, unless a reset happened while it was being answered (say, a delayed answer
        to a client that gave up): it must not show up in the next test's log."""
        generation = call.pop("_generation", None)
        with self._lock:
            if generation is None or generation == self._generation:
                self._calls.append(call)

    def calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._calls]

    def callers(self) -> list[str]:
        with self._lock:
            return sorted({c["access_key_id"] for c in self._calls if c.get("access_key_id")})

    def remember(self, access_key_id: str, identity: IssuedIdentity) -> None:
        with self._lock:
            self._identities[access_key_id] = identity

    def identity(self, access_key_id: str | None) -> IssuedIdentity:
        with self._lock:
            found = self._identities.get(access_key_id or "")
        if found is not None:
            return found
        return IssuedIdentity(
            account_id=DEFAULT_ACCOUNT_ID,
            arn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:user/stub-user",
            user_id=access_key_id or "anonymous",
            issuer="static",
        )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    # ---- plumbing -------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", secrets.token_hex(16))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        self._send(status, json.dumps(payload).encode(), content_type)

    def _caller(self) -> Caller:
        match = _CREDENTIAL_RE.search(self.headers.get("Authorization", ""))
        if match is None:
            return Caller(None, None, None)
        return Caller(match.group(1), match.group(3), match.group(4))

    @property
    def _state(self) -> StubState:
        return self.server.state

    # ---- routing --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/_stub/calls":
            self._send_json(200, self._state.calls())
        elif path == "/_stub/callers":
            self._send_json(200, self._state.callers())
        elif path == "/_stub/config":
            self._send_json(200, self._state.config())
        elif path == "/_stub/health":
            self._send_json(200, {"ok": True})
        elif urllib.parse.urlsplit(self.path).query:
            self._sts(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))
        else:
            self._send_json(404, {"error": f"no such path: {path}"})

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        body = self._body()
        if path.startswith("/_stub/"):
            self._control(path, body)
            return
        eks_auth = EKS_AUTH_PATH_RE.match(path)
        if eks_auth is not None:
            self._eks_auth(urllib.parse.unquote(eks_auth.group(1)), body)
            return
        target = self.headers.get("X-Amz-Target", "")
        if target.startswith(ECR_TARGET_PREFIX):
            self._ecr("ecr", target[len(ECR_TARGET_PREFIX) :], body)
        elif target.startswith(ECR_PUBLIC_TARGET_PREFIX):
            self._ecr("ecr-public", target[len(ECR_PUBLIC_TARGET_PREFIX) :], body)
        elif target:
            self._json_error(StubError(400, "UnknownOperationException", f"unknown target {target}"))
        else:
            self._sts(urllib.parse.parse_qs(body.decode("utf-8", "replace")))

    def _control(self, path: str, body: bytes) -> None:
        if path == "/_stub/reset":
            self._state.reset()
            self._send_json(200, {"ok": True})
        elif path == "/_stub/config":
            try:
                settings = json.loads(body or b"{}")
                if not isinstance(settings, dict):
                    raise ValueError("config must be a JSON object")
                self._send_json(200, self._state.configure(settings))
            except StubError as exc:
                self._send_json(exc.status, {"error": exc.message})
            except ValueError as exc:
                self._send_json(400, {"error": str(exc)})
        else:
            self._send_json(404, {"error": f"no such path: {path}"})

    # ---- ECR and ECR Public (JSON 1.1) ----------------------------------------------------------

    def _json_error(self, err: StubError) -> None:
        self._send(
            err.status,
            json.dumps({"__type": err.code, "message": err.message}).encode(),
            "application/x-amz-json-1.1",
            {"x-amzn-ErrorType": err.code},
        )

    def _ecr(self, service: str, action: str, body: bytes) -> None:
        caller = self._caller()
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        registry_ids = request.get("registryIds") if isinstance(request, dict) else None
        record: dict[str, Any] = {
            "service": service,
            "action": action,
            "region": caller.region,
            "access_key_id": caller.access_key_id,
            "registry_ids": list(registry_ids or []),
            "role_arn": None,
            "role_session_name": None,
            "web_identity": None,
            "status": 200,
            "password": None,
            "time": time.time(),
            "_generation": self._state.generation(),
        }
        try:
            if action != "GetAuthorizationToken":
                raise StubError(400, "UnknownOperationException", f"{action} is not supported by the stub")
            if caller.access_key_id is None:
                raise StubError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
            delay = float(self._state.config()["delay_seconds"] or 0)
            if delay > 0:
                time.sleep(delay)
            if not self._state.wait_at_barrier():
                raise StubError(500, "ServerException", "stub barrier: the other concurrent calls never arrived")
            account = self._state.identity(caller.access_key_id).account_id
            failure = self._state.take_failure(record["_generation"], (account, caller.region or "us-east-1"))
            if failure is not None:
                raise failure
            payload, record["password"] = self._issue_token(service, caller, record["registry_ids"])
        except StubError as err:
            record["status"] = err.status
            self._state.record(record)
            self._json_error(err)
            return
        self._state.record(record)
        self._send_json(200, payload, "application/x-amz-json-1.1")

    def _issue_token(self, service: str, caller: Caller, registry_ids: list[str]) -> tuple[Any, str]:
        cfg = self._state.config()
        password = cfg["password"]
        if cfg["password_pod_identity_only"] and self._state.identity(caller.access_key_id).issuer != "eks-auth":
            password = None
        password = password or "stubpw-" + secrets.token_urlsafe(24)
        malformed = cfg["malformed_token"]
        if isinstance(malformed, str) and malformed:
            token = malformed
        elif malformed:
            token = MALFORMED_TOKEN
        else:
            token = base64.b64encode(f"AWS:{password}".encode()).decode()
        entry: dict[str, Any] = {"authorizationToken": token}
        if not cfg["omit_expires_at"]:
            if cfg["expires_at"] is not None:
                entry["expiresAt"] = float(cfg["expires_at"])
            else:
                entry["expiresAt"] = time.time() + float(cfg["token_lifetime_seconds"])
        if service == "ecr-public":
            return {"authorizationData": entry}, password
        region = caller.region or "us-east-1"
        ids = registry_ids or [self._state.identity(caller.access_key_id).account_id]
        data = [dict(entry, proxyEndpoint=f"https://{rid}.dkr.ecr.{region}.amazonaws.com") for rid in ids]
        return {"authorizationData": data}, password

    # ---- EKS Auth (REST-JSON) -------------------------------------------------------------------

    def _rest_json_error(self, err: StubError) -> None:
        self._send(err.status, json.dumps({"message": err.message}).encode(), "application/json",
                   {"x-amzn-ErrorType": err.code})

    def _eks_auth(self, cluster: str, body: bytes) -> None:
        caller = self._caller()
        record: dict[str, Any] = {
            "service": "eks-auth",
            "action": "AssumeRoleForPodIdentity",
            "region": caller.region,
            "access_key_id": caller.access_key_id,
            "registry_ids": [],
            "cluster": cluster,
            "role_arn": None,
            "role_session_name": None,
            "association_arn": None,
            "web_identity": None,  # iss, sub and aud of the token; never the token
            "status": 200,
            "password": None,
            "issued_access_key_id": None,
            "time": time.time(),
            "_generation": self._state.generation(),
        }
        try:
            if caller.access_key_id is None or caller.service != "eks-auth":
                raise StubError(403, "AccessDeniedException", "Missing or wrong Authentication Token (eks-auth SigV4)")
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                raise StubError(400, "InvalidRequestException", "request body is not JSON") from None
            token = request.get("token") if isinstance(request, dict) else None
            if not isinstance(token, str) or not token:
                raise StubError(400, "InvalidParameterException", "token is required")
            try:
                claims = decode_jwt_claims(token)
            except StubError:
                raise StubError(400, "InvalidTokenException", "token is not a valid JWT") from None
            record["web_identity"] = {k: claims.get(k) for k in ("iss", "sub", "aud")}
            aud = claims.get("aud")
            if POD_IDENTITY_AUDIENCE not in (aud if isinstance(aud, list) else [aud]):
                raise StubError(400, "InvalidTokenException", f"token audience must be {POD_IDENTITY_AUDIENCE}")
            exp = claims.get("exp")
            if isinstance(exp, (int, float)) and exp < time.time():
                raise StubError(400, "ExpiredTokenException", "token expired")
            config = self._state.config()
            if float(config["eks_auth_delay_seconds"] or 0) > 0:
                time.sleep(float(config["eks_auth_delay_seconds"]))
            if config["deny_pod_identity"]:
                raise StubError(400, "AccessDeniedException",
                                "not authorized to perform eks-auth:AssumeRoleForPodIdentity")
            if self._state.take_eks_auth_throttle(record["_generation"]):
                raise StubError(429, "ThrottlingException", "Rate exceeded")
            sub = str(claims.get("sub", ""))
            prefix, _, rest = sub.partition("system:serviceaccount:")
            namespace, _, account_name = rest.partition(":")
            if prefix or not namespace or not account_name:
                raise StubError(400, "InvalidTokenException", "token subject is not a service account")
            associations = config["pod_identity_associations"].get(cluster)
            if associations is None:
                raise StubError(404, "ResourceNotFoundException", f"No cluster found for name: {cluster}.")
            role_arn = associations.get(f"{namespace}/{account_name}")
            if role_arn is None:
                raise StubError(404, "ResourceNotFoundException",
                                f"No Pod Identity Association found for {namespace}/{account_name}.")
            match = _ROLE_ARN_RE.match(role_arn)
            if match is None:
                raise StubError(500, "InternalServerException", f"stub association role {role_arn!r} is not a role ARN")
            account, role_name = match.group(1), match.group(2)
            region = caller.region or "us-east-1"
            association_id = "a-" + secrets.token_hex(8)
            association_arn = f"arn:aws:eks:{region}:{account}:podidentityassociation/{cluster}/{association_id}"
            session = f"eks-{cluster}-{account_name}-{secrets.token_hex(4)}"[:64]
            access_key_id = _random_id("ASIA")
            role_id = _random_id("AROA")
            assumed_arn = f"arn:aws:sts::{account}:assumed-role/{role_name}/{session}"
            self._state.remember(access_key_id, IssuedIdentity(account, assumed_arn, f"{role_id}:{session}",
                                                                   issuer="eks-auth"))
            record.update(role_arn=role_arn, association_arn=association_arn, issued_access_key_id=access_key_id)
            payload = {
                "subject": {"namespace": namespace, "serviceAccount": account_name},
                "audience": POD_IDENTITY_AUDIENCE,
                "podIdentityAssociation": {"associationArn": association_arn, "associationId": association_id},
                "assumedRoleUser": {"arn": assumed_arn, "assumeRoleId": f"{role_id}:{session}"},
                "credentials": {
                    "sessionToken": f"stubsession-{secrets.token_urlsafe(48)}",
                    "secretAccessKey": secrets.token_urlsafe(30),
                    "accessKeyId": access_key_id,
                    "expiration": int(time.time() + float(config["pod_identity_lifetime_seconds"])),
                },
            }
        except StubError as err:
            record["status"] = err.status
            self._state.record(record)
            self._rest_json_error(err)
            return
        self._state.record(record)
        self._send_json(200, payload)

    # ---- STS (query protocol, XML) --------------------------------------------------------------

    def _xml(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/xml")

    def _sts_error(self, err: StubError) -> None:
        kind = "Receiver" if err.status >= 500 else "Sender"
        self._xml(
            err.status,
            f'<ErrorResponse xmlns="{STS_XMLNS}"><Error><Type>{kind}</Type>'
            f"<Code>{escape(err.code)}</Code><Message>{escape(err.message)}</Message></Error>"
            f"<RequestId>{secrets.token_hex(16)}</RequestId></ErrorResponse>",
        )

    def _sts(self, form: dict[str, list[str]]) -> None:
        params = {key: values[0] for key, values in form.items() if values}
        action = params.get("Action", "")
        caller = self._caller()
        record: dict[str, Any] = {
            "service": "sts",
            "action": action,
            "region": caller.region,
            "access_key_id": caller.access_key_id,
            "registry_ids": [],
            "role_arn": params.get("RoleArn"),
            "role_session_name": params.get("RoleSessionName"),
            "web_identity": None,
            "status": 200,
            "password": None,
            "issued_access_key_id": None,
            "time": time.time(),
            "_generation": self._state.generation(),
        }
        try:
            if action == "GetCallerIdentity":
                result = self._get_caller_identity(caller)
            elif action == "AssumeRole":
                if caller.access_key_id is None:
                    raise StubError(
                        403, "MissingAuthenticationToken", "Request is missing Authentication Token"
                    )
                denied = self._state.config()["deny_assume_role"]
                if "*" in denied or params.get("RoleArn") in denied:
                    raise StubError(403, "AccessDenied", "Not authorized to perform sts:AssumeRole")
                result = self._assume(params, record, None)
            elif action == "AssumeRoleWithWebIdentity":
                claims = decode_jwt_claims(params.get("WebIdentityToken", ""))
                record["web_identity"] = {k: claims.get(k) for k in ("iss", "sub", "aud")}
                exp = claims.get("exp")
                if isinstance(exp, (int, float)) and exp < time.time():
                    raise StubError(400, "ExpiredTokenException", "Token expired")
                if self._state.config()["deny_web_identity"]:
                    raise StubError(
                        403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"
                    )
                result = self._assume(params, record, claims)
            else:
                raise StubError(400, "InvalidAction", f"Could not find operation {action!r}")
        except StubError as err:
            record["status"] = err.status
            self._state.record(record)
            self._sts_error(err)
            return
        self._state.record(record)
        self._xml(
            200,
            f'<{action}Response xmlns="{STS_XMLNS}"><{action}Result>{result}</{action}Result>'
            f"<ResponseMetadata><RequestId>{secrets.token_hex(16)}</RequestId></ResponseMetadata>"
            f"</{action}Response>",
        )

    def _get_caller_identity(self, caller: Caller) -> str:
        if caller.access_key_id is None:
            raise StubError(403, "MissingAuthenticationToken", "Request is missing Authentication Token")
        ident = self._state.identity(caller.access_key_id)
        return (
            f"<UserId>{escape(ident.user_id)}</UserId><Account>{ident.account_id}</Account>"
            f"<Arn>{escape(ident.arn)}</Arn>"
        )

    def _assume(self, params: dict[str, str], record: dict[str, Any], claims: dict[str, Any] | None) -> str:
        role_arn = params.get("RoleArn", "")
        session = params.get("RoleSessionName", "")
        match = _ROLE_ARN_RE.match(role_arn)
        if match is None:
            raise StubError(400, "ValidationError", f"{role_arn!r} is not a valid role ARN")
        if not re.fullmatch(r"[\w+=,.@-]{2,64}", session):
            raise StubError(400, "ValidationError", "RoleSessionName must be 2-64 chars of [\\w+=,.@-]")
        account, role_name = match.group(1), match.group(2)
        lifetime = int(params.get("DurationSeconds") or DEFAULT_STS_LIFETIME_SECONDS)
        expires_at = self._state.config()["credentials_expire_at"]
        access_key_id = _random_id("ASIA")
        role_id = _random_id("AROA")
        assumed_arn = f"arn:aws:sts::{account}:assumed-role/{role_name}/{session}"
        self._state.remember(access_key_id, IssuedIdentity(account, assumed_arn, f"{role_id}:{session}"))
        record["issued_access_key_id"] = access_key_id
        xml = (
            "<Credentials>"
            f"<AccessKeyId>{access_key_id}</AccessKeyId>"
            f"<SecretAccessKey>{secrets.token_urlsafe(30)}</SecretAccessKey>"
            f"<SessionToken>stubsession-{secrets.token_urlsafe(48)}</SessionToken>"
            f"<Expiration>{_iso8601(time.time() + lifetime if expires_at is None else expires_at)}</Expiration>"
            "</Credentials>"
            f"<AssumedRoleUser><AssumedRoleId>{escape(role_id)}:{escape(session)}</AssumedRoleId>"
            f"<Arn>{escape(assumed_arn)}</Arn></AssumedRoleUser>"
            "<PackedPolicySize>0</PackedPolicySize>"
        )
        if claims is not None:
            sub = claims.get("sub", "")
            aud = claims.get("aud", "")
            if isinstance(aud, list):
                aud = aud[0] if aud else ""
            xml += (
                f"<SubjectFromWebIdentityToken>{escape(str(sub))}</SubjectFromWebIdentityToken>"
                f"<Audience>{escape(str(aud))}</Audience>"
                f"<Provider>{escape(str(claims.get('iss', '')))}</Provider>"
            )
        return xml


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many plugin processes may connect at once

    def __init__(self, address: tuple[str, int], state: StubState, verbose: bool) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self.verbose = verbose

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a deadline test, a killed plugin) is expected, not an error.
        if isinstance(sys.exc_info()[1], ConnectionError) and not self.verbose:
            return
        super().handle_error(request, client_address)


class StubServer:
    """The stub, run in a background thread: ``start()``, ``.url``, ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> None:
        self.host = host
        self.port = port
        self.verbose = verbose
        self.state = StubState()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("stub server is not running")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> StubServer:
        if self._server is None:
            self._server = _Server((self.host, self.port), self.state, self.verbose)
            self._thread = threading.Thread(target=self._server.serve_forever, name="aws-stub", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local AWS stub (ECR, ECR Public, STS, EKS Auth) for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = StubServer(args.host, args.port, args.verbose).start()
    print(server.url, flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
