"""ECR authorization tokens: fetch one from AWS and decode it into registry credentials."""

from __future__ import annotations

import base64
import binascii
import time

from ecr_kubelet import logs, redact
from ecr_kubelet.credentials import assume, credentials_for
from ecr_kubelet.errors import ProviderError
from ecr_kubelet.models import CLOCK_SKEW, MAX_PASSWORD, MAX_TOKEN_LIFETIME, MAX_USERNAME, Token, is_token_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from botocore.credentials import ReadOnlyCredentials
    from botocore.session import Session

    from ecr_kubelet.deadline import Deadline
    from ecr_kubelet.models import Identity, Registry

log = logs.get(__name__)


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
    # What the cache accepts back (printable ASCII, bounded), so a token is never fetched to be refused.
    if not (is_token_text(username, MAX_USERNAME) and is_token_text(password, MAX_PASSWORD)):
        raise MalformedTokenError("ECR returned an authorization token with control characters or oversized parts")
    redact.register(password)
    return username, password


def fetch_token(registry: Registry, identity: Identity, session: Session, deadline: Deadline,
                max_attempts: int, credentials: ReadOnlyCredentials | None = None) -> Token:
    """Call (ecr|ecr-public):GetAuthorizationToken for the registry as the given identity (whose
    `credentials` the caller may have resolved already: roles.py, after AssumeRole).

    With a still-valid cached token to fall back on (`deadline.fallback`), a throttled call is not
    retried for the whole window: answering from the cache soon beats answering fresh at 57 s.
    """
    from ecr_kubelet.awsapi import ClientPool, call_with_retries, client_config

    if credentials is not None:
        creds, cacheable = credentials, True
    else:
        creds, cacheable = credentials_for(identity, registry, session, deadline, max_attempts)
    action = f"{registry.service}:GetAuthorizationToken in {registry.region}"
    clients = ClientPool(lambda config: session.create_client(
        registry.service, region_name=registry.region, config=config,
        aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
        aws_session_token=creds.token,
    ))

    def attempt(current: Deadline) -> Any:
        client = clients.get(client_config(registry.service, registry, deadline=current))
        if registry.kind == "public":
            return client.get_authorization_token()["authorizationData"]
        # Ask for the registry's own account: a cross-account token is only valid for that registry.
        entries = client.get_authorization_token(registryIds=[registry.account])["authorizationData"]
        return entries[0] if entries else {}

    log.debug("calling %s as %s", action, identity.describe())
    data = call_with_retries(attempt, action, deadline, max_attempts, patient=deadline.fallback is None)
    if not isinstance(data, dict):
        raise MalformedTokenError(f"{action} returned no authorization data")
    encoded = data.get("authorizationToken")
    if not isinstance(encoded, str):
        raise MalformedTokenError(f"{action} returned no authorization token")
    username, password = decode_authorization_token(encoded)
    fetched_at = time.time()
    return Token(username=username, password=password,
                 expires_at=checked_expiry(_epoch(data.get("expiresAt")), fetched_at, action),
                 fetched_at=fetched_at, cacheable=cacheable)


def checked_expiry(expires_at: float | None, fetched_at: float, action: str) -> float | None:
    """AWS's expiry, if it is within what an ECR token can be: after now, at most 12 hours away."""
    if expires_at is None:
        return None  # AWS did not say: handed out, never cached
    if not expires_at > fetched_at:
        raise MalformedTokenError(f"{action} returned a token that has already expired (at {logs.when(expires_at)})")
    if expires_at > fetched_at + MAX_TOKEN_LIFETIME + CLOCK_SKEW:
        raise MalformedTokenError(
            f"{action} returned a token expiring at {logs.when(expires_at)}, more than 12 hours from now"
        )
    return expires_at


def _epoch(value: object) -> float | None:
    from datetime import datetime  # only on a miss: the hit path never decodes AWS answers

    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def node_region(session: Session, env: Mapping[str, str]) -> str | None:
    """The node's configured region as AWS SDKs read it: AWS_REGION first, then what botocore's own
    region setting reads (AWS_DEFAULT_REGION, then the profile's `region`; botocore ignores AWS_REGION)."""
    region = (env.get("AWS_REGION") or "").strip()
    return region or session.get_config_variable("region") or None


def node_partition(session: Session, env: Mapping[str, str]) -> str | None:
    """The partition of the node's configured region, or None when no region is configured."""
    region = node_region(session, env)
    if not region:
        return None
    try:
        return str(session.get_partition_for_region(region))
    except Exception:
        return None


def fetch_as_registry_role(registry: Registry, identity: Identity, session: Session, deadline: Deadline,
                max_attempts: int) -> Token:
    """GetAuthorizationToken as the registry role, assumed with the node identity (after --role-arn).

    The token lives no longer than the assumed credentials (ECR ends it with them), so its expiry is
    the earlier of the two: the cacheDuration we return and the cache both follow from it. Every call
    is sized from the run's deadline and retried as the plugin's other calls are (awsapi).
    """
    assert identity.registry_role is not None
    base, as_keyed = credentials_for(identity.replace(registry_role=None), registry, session,
                                     deadline, max_attempts)
    creds, expiration = assume(session, registry, base, identity.registry_role, deadline, max_attempts)
    token = fetch_token(registry, identity, session, deadline, max_attempts, credentials=creds)
    if expiration is not None and (token.expires_at is None or expiration < token.expires_at):
        log.info("token life capped at the assumed role's credentials (%s)", identity.registry_role)
        token = token.replace(expires_at=expiration)
    if not as_keyed:  # the node credentials came from another source than the cache key names
        token = token.replace(cacheable=False)
    return token
