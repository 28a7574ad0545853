"""Which AWS identity fetches a token, and how its credentials are obtained.

Planning (which identity, and a cache fingerprint for it) uses the standard library only; turning the
plan into credentials (`credentials_for`) imports botocore and is done only on a cache miss.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ecr_kubelet import redact
from ecr_kubelet.errors import AuthError, BadInputError
from ecr_kubelet.options import Options
from ecr_kubelet.registry import Registry

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials
    from botocore.session import Session

log = logging.getLogger(__name__)

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
# Environment variables that select where botocore's default chain finds credentials.
_CHAIN_SELECTORS = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
)


@dataclass(frozen=True)
class Identity:
    mode: Literal["node", "role", "service-account"]
    role_arn: str | None = None
    web_identity_token: str | None = field(default=None, repr=False)
    claims: dict[str, str] | None = None  # iss, sub, aud of the service-account token
    registry_role: str | None = None  # per-registry role (roles.py), assumed as this identity's last hop

    def fingerprint(self) -> str | None:
        """A stable, secret-free name for this identity in cache keys, or None if it cannot be cached."""
        base = self._base_fingerprint()
        if self.registry_role is None or base is None:
            return base
        return f"registry-role={self.registry_role};via={base}"

    def _base_fingerprint(self) -> str | None:
        node = node_fingerprint()
        if self.mode == "node":
            return node
        if self.mode == "role":
            return f"role={self.role_arn};caller={node}"
        if self.claims is None:
            return None  # not a JWT: let STS judge it every time
        c = self.claims
        return f"web-identity={self.role_arn};iss={c['iss']};sub={c['sub']};aud={c['aud']}"

    def describe(self) -> str:
        if self.registry_role is not None:
            base = "node credentials" if self.mode == "node" else f"node credentials via {self.role_arn}"
            return f"{base} assuming registry role {self.registry_role}"
        if self.mode == "node":
            return "node credentials"
        if self.mode == "role":
            return f"node credentials assuming {self.role_arn}"
        sub = self.claims["sub"] if self.claims else "unknown subject"
        return f"service account {sub} assuming {self.role_arn}"


def node_fingerprint() -> str:
    """Which credentials botocore's default chain will find, without resolving them.

    Static keys are named by a one-way hash of the access key id; otherwise by the chain's inputs.
    """
    key_id = os.environ.get("AWS_ACCESS_KEY_ID")
    if key_id:
        return "static-key=" + hashlib.sha256(key_id.encode()).hexdigest()[:32]
    selectors = [f"{name}={os.environ[name]}" for name in _CHAIN_SELECTORS if os.environ.get(name)]
    return "chain(" + ",".join(selectors) + f");uid={os.geteuid()}"


def plan_identity(token: str | None, annotations: dict[str, str], options: Options) -> Identity:
    if token is not None:
        redact.register(token)
        role = next((annotations[k] for k in options.sa_role_annotations if annotations.get(k)), None)
        if role is not None:
            if not ROLE_ARN.match(role):
                raise BadInputError("service account role annotation is not an IAM role ARN")
            return Identity(mode="service-account", role_arn=role, web_identity_token=token,
                            claims=jwt_claims(token))
        if options.sa_without_role == "fail":
            raise AuthError(
                "the pod's service account has none of the role annotations "
                f"{', '.join(options.sa_role_annotations)} and --sa-without-role=fail"
            )
        log.info("service account has no role annotation; using node credentials")
    if options.role_arn:
        return Identity(mode="role", role_arn=options.role_arn)
    return Identity(mode="node")


def jwt_claims(token: str) -> dict[str, str] | None:
    """Issuer, subject and audience of a JWT, read without verifying it (STS verifies)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("sub"), str):
        return None
    aud = payload.get("aud")
    audience = ",".join(sorted(aud)) if isinstance(aud, list) else str(aud)
    return {"iss": str(payload.get("iss")), "sub": payload["sub"], "aud": audience}


def session_name(identity: Identity) -> str:
    """RoleSessionName (shown in CloudTrail): the service account where there is one."""
    base = "ecr-credential-provider"
    if identity.claims:
        base = identity.claims["sub"].removeprefix("system:serviceaccount:").replace(":", ".")
    return re.sub(r"[^\w+=,.@-]", "-", base)[:64].ljust(2, "-")


def credentials_for(identity: Identity, registry: Registry, session: Session) -> ReadOnlyCredentials:
    """Resolve the identity to AWS credentials (default chain, AssumeRole, or web identity)."""
    from ecr_kubelet.awsapi import client_config, translate_error

    action = "resolving node credentials"
    try:
        if identity.mode == "service-account":
            action = f"sts:AssumeRoleWithWebIdentity for {identity.role_arn}"
            sts: Any = session.create_client("sts", region_name=registry.region,
                                             config=client_config("sts", registry, unsigned=True))
            result = sts.assume_role_with_web_identity(
                RoleArn=identity.role_arn, RoleSessionName=session_name(identity),
                WebIdentityToken=identity.web_identity_token,
            )
            return _from_sts(result["Credentials"])
        creds = session.get_credentials()
        if creds is None:
            raise AuthError("no AWS credentials found by the default chain (env, profile, web identity, "
                            "container or instance metadata)")
        frozen = creds.get_frozen_credentials()
        redact.register(frozen.secret_key, frozen.token)
        if identity.mode == "node":
            return frozen
        action = f"sts:AssumeRole for {identity.role_arn}"
        sts = session.create_client("sts", region_name=registry.region,
                                    config=client_config("sts", registry))
        result = sts.assume_role(RoleArn=identity.role_arn, RoleSessionName=session_name(identity))
        return _from_sts(result["Credentials"])
    except Exception as exc:
        raise translate_error(exc, action) from None


def _from_sts(creds: dict[str, object]) -> ReadOnlyCredentials:
    from botocore.credentials import ReadOnlyCredentials

    access, secret = str(creds["AccessKeyId"]), str(creds["SecretAccessKey"])
    token = str(creds["SessionToken"])
    redact.register(secret, token)
    return ReadOnlyCredentials(access, secret, token)
