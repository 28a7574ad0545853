"""Which AWS identity fetches a token, and how its credentials are obtained.

Planning (which identity, and a cache fingerprint for it) uses the standard library only; turning the
plan into credentials (`credentials_for`) imports botocore and is done only on a cache miss.
"""

from __future__ import annotations

import base64
import binascii
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

    from ecr_kubelet.deadline import Deadline
    from ecr_kubelet.node_source import NodeSource

log = logging.getLogger(__name__)

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
# sts:AssumeRoleWithWebIdentity's WebIdentityToken length bounds (botocore's STS model).
WEB_IDENTITY_TOKEN_LENGTH = (4, 20000)


@dataclass(frozen=True)
class Identity:
    mode: Literal["node", "role", "service-account"]
    role_arn: str | None = None
    web_identity_token: str | None = field(default=None, repr=False)
    claims: dict[str, str] | None = None  # iss, sub, aud of the service-account token
    node: NodeSource | None = field(default=None, compare=False)  # node and role modes: the chain's source
    registry_role: str | None = None  # per-registry role (roles.py), assumed as this identity's last hop

    def fingerprint(self) -> str | None:
        """A stable, secret-free name for this identity in cache keys, or None if it cannot be cached."""
        base = self._base_fingerprint()
        if self.registry_role is None or base is None:
            return base
        return f"registry-role={self.registry_role};via={base}"

    def _base_fingerprint(self) -> str | None:
        if self.mode == "service-account":
            if self.claims is None:
                return None  # not a JWT: let STS judge it every time
            c = self.claims
            return f"web-identity={self.role_arn};iss={c['iss']};sub={c['sub']};aud={c['aud']}"
        if self.node is None:
            return None  # which credentials will sign is unknown: never share a token
        node = f"{self.node.fingerprint};uid={os.geteuid()}"
        return node if self.mode == "node" else f"role={self.role_arn};caller={node}"

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


def plan_identity(token: str | None, annotations: dict[str, str], options: Options) -> Identity:
    if token is not None:
        redact.register(token)
        role = next((annotations[k] for k in options.sa_role_annotations if annotations.get(k)), None)
        if role is not None:
            if not ROLE_ARN.match(role):
                raise BadInputError("service account role annotation is not an IAM role ARN")
            low, high = WEB_IDENTITY_TOKEN_LENGTH
            if not low <= len(token) <= high:
                raise BadInputError(
                    f"serviceAccountToken must be {low} to {high} characters for sts:AssumeRoleWithWebIdentity, "
                    f"got {len(token)}"
                )
            if not (token.isascii() and token.isprintable() and " " not in token):
                raise BadInputError("serviceAccountToken must be printable ASCII without spaces (a JWT)")
            return Identity(mode="service-account", role_arn=role, web_identity_token=token,
                            claims=jwt_claims(token))
        if options.sa_without_role == "fail":
            raise AuthError(
                "the pod's service account has none of the role annotations "
                f"{', '.join(options.sa_role_annotations)} and --sa-without-role=fail"
            )
        log.info("service account has no role annotation; using node credentials")
    from ecr_kubelet.node_source import resolve_node_source

    node = resolve_node_source(os.environ)
    if options.role_arn:
        return Identity(mode="role", role_arn=options.role_arn, node=node)
    return Identity(mode="node", node=node)


def jwt_claims(token: str) -> dict[str, str] | None:
    """Issuer, subject and audience of a JWT, read without verifying it (STS verifies)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, RecursionError):  # the token is the request's: anything goes
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


def credentials_for(identity: Identity, registry: Registry, session: Session, deadline: Deadline,
                    max_attempts: int) -> tuple[ReadOnlyCredentials, bool]:
    """Resolve the identity to AWS credentials (default chain, AssumeRole, or web identity).

    Also says whether the node credentials came from the source the cache key names: if botocore
    picked another one, the token must not be cached under that key.
    """
    from ecr_kubelet.awsapi import ClientPool, call_with_retries, client_config, translate_error

    pools = {unsigned: ClientPool(lambda config: session.create_client("sts", region_name=registry.region,
                                                                       config=config))
             for unsigned in (False, True)}

    def sts(current: Deadline, *, unsigned: bool = False) -> Any:
        return pools[unsigned].get(client_config("sts", registry, unsigned=unsigned, deadline=current))

    if identity.mode == "service-account":
        action = f"sts:AssumeRoleWithWebIdentity for {identity.role_arn}"
        result = call_with_retries(
            lambda current: sts(current, unsigned=True).assume_role_with_web_identity(
                RoleArn=identity.role_arn, RoleSessionName=session_name(identity),
                WebIdentityToken=identity.web_identity_token,
            ),
            action, deadline, max_attempts, patient=deadline.fallback is None,
        )
        return _from_sts(result["Credentials"]), True
    try:
        creds = session.get_credentials()
        if creds is None:
            raise AuthError("no AWS credentials found by the default chain (env, profile, web identity, "
                            "container or instance metadata)")
        frozen = creds.get_frozen_credentials()
    except Exception as exc:
        raise translate_error(exc, "resolving node credentials") from None
    redact.register(frozen.secret_key, frozen.token)
    predicted = identity.node.method if identity.node is not None else None
    as_keyed = getattr(creds, "method", None) == predicted
    if not as_keyed:
        log.info("node credentials came from %s, not %s as predicted: the token is not cached",
                 getattr(creds, "method", "an unknown source"), predicted or "an unknown source")
    if identity.mode == "node":
        return frozen, as_keyed
    result = call_with_retries(
        lambda current: sts(current).assume_role(RoleArn=identity.role_arn, RoleSessionName=session_name(identity)),
        f"sts:AssumeRole for {identity.role_arn}", deadline, max_attempts, patient=deadline.fallback is None,
    )
    return _from_sts(result["Credentials"]), as_keyed


def _from_sts(creds: dict[str, object]) -> ReadOnlyCredentials:
    from botocore.credentials import ReadOnlyCredentials

    access, secret = str(creds["AccessKeyId"]), str(creds["SecretAccessKey"])
    token = str(creds["SessionToken"])
    redact.register(secret, token)
    return ReadOnlyCredentials(access, secret, token)
