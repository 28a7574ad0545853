"""ECR authorization tokens: fetch one from AWS and decode it into registry credentials."""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ecr_kubelet import redact
from ecr_kubelet.errors import ProviderError
from ecr_kubelet.identity import Identity, credentials_for
from ecr_kubelet.registry import Registry

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials
    from botocore.session import Session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Token:
    username: str
    password: str = field(repr=False)
    expires_at: float | None  # epoch seconds; None when AWS did not say
    fetched_at: float


class MalformedTokenError(ProviderError):
    """ECR answered with something that is not base64 of `user:password`."""


def decode_authorization_token(encoded: str) -> tuple[str, str]:
    """Split ECR's base64 `user:password` token; raise MalformedTokenError otherwise."""
    redact.register(encoded)
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise MalformedTokenError("ECR returned an authorization token that is not valid base64") from None
    username, sep, password = decoded.partition(":")
    if not sep or not username or not password:
        raise MalformedTokenError("ECR returned an authorization token that is not of the form user:password")
    redact.register(password)
    return username, password


def fetch_token(registry: Registry, identity: Identity, session: Session,
                credentials: ReadOnlyCredentials | None = None) -> Token:
    """Call (ecr|ecr-public):GetAuthorizationToken for the registry as the given identity (whose
    `credentials` the caller may have resolved already)."""
    from ecr_kubelet.awsapi import client_config, translate_error

    creds = credentials if credentials is not None else credentials_for(identity, registry, session)
    action = f"{registry.service}:GetAuthorizationToken in {registry.region}"
    try:
        client: Any = session.create_client(
            registry.service, region_name=registry.region, config=client_config(registry.service, registry),
            aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
            aws_session_token=creds.token,
        )
        log.debug("calling %s as %s", action, identity.describe())
        if registry.kind == "public":
            data = client.get_authorization_token()["authorizationData"]
        else:
            # Ask for the registry's own account: a cross-account token is only valid for that registry.
            entries = client.get_authorization_token(registryIds=[registry.account])["authorizationData"]
            data = entries[0] if entries else {}
    except Exception as exc:
        raise translate_error(exc, action) from None
    encoded = data.get("authorizationToken")
    if not isinstance(encoded, str):
        raise MalformedTokenError(f"{action} returned no authorization token")
    username, password = decode_authorization_token(encoded)
    return Token(username=username, password=password, expires_at=_epoch(data.get("expiresAt")),
                 fetched_at=time.time())


def _epoch(value: object) -> float | None:
    from datetime import datetime  # only on a miss: the hit path never decodes AWS answers

    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def node_partition(session: Session) -> str | None:
    """The partition of the node's configured region, or None when no region is configured."""
    region = session.get_config_variable("region")
    if not region:
        return None
    try:
        return str(session.get_partition_for_region(region))
    except Exception:
        return None
