"""AWS credentials for a planned identity (identity.py): the node's default chain, a role assumed with
it (--role-arn, --registry-role), or the pod's web identity. botocore is loaded; a cache miss only.
"""

from __future__ import annotations

from ecr_kubelet import logs, redact
from ecr_kubelet.awsapi import ClientPool, call_with_retries, client_config, translate_error
from ecr_kubelet.errors import AuthError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from botocore.credentials import ReadOnlyCredentials
    from botocore.session import Session

    from ecr_kubelet.deadline import Deadline
    from ecr_kubelet.models import Identity, Registry

log = logs.get(__name__)

SESSION_NAME = "ecr-credential-provider"  # RoleSessionName of a registry role (shown in CloudTrail)


def session_name(identity: Identity) -> str:
    """RoleSessionName (shown in CloudTrail): the service account where there is one."""
    base = "ecr-credential-provider"
    if identity.claims:
        base = identity.claims["sub"].removeprefix("system:serviceaccount:").replace(":", ".")
    import re

    return re.sub(r"[^\w+=,.@-]", "-", base)[:64].ljust(2, "-")


def credentials_for(identity: Identity, registry: Registry, session: Session, deadline: Deadline,
                    max_attempts: int) -> tuple[ReadOnlyCredentials, bool]:
    """Resolve the identity to AWS credentials (default chain, AssumeRole, or web identity).

    Also says whether the node credentials came from the source the cache key names: if botocore
    picked another one, the token must not be cached under that key.
    """

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
    as_keyed = predicted is not None and getattr(creds, "method", None) == predicted
    if predicted is not None and not as_keyed:  # (an unnamed identity was reported when it was planned)
        log.info("node credentials came from %s, not %s as predicted: the token is not cached",
                 getattr(creds, "method", "an unknown source"), predicted)
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


def assume(session: Session, registry: Registry, caller: ReadOnlyCredentials, role_arn: str,
           deadline: Deadline, max_attempts: int) -> tuple[ReadOnlyCredentials, float | None]:
    """sts:AssumeRole in the registry's region (so its partition) with the caller's credentials."""
    clients = ClientPool(lambda config: session.create_client(
        "sts", region_name=registry.region, config=config,
        aws_access_key_id=caller.access_key, aws_secret_access_key=caller.secret_key,
        aws_session_token=caller.token,
    ))
    result = call_with_retries(
        lambda current: clients.get(client_config("sts", registry, deadline=current)).assume_role(
            RoleArn=role_arn, RoleSessionName=SESSION_NAME),
        f"sts:AssumeRole for registry role {role_arn}", deadline, max_attempts, patient=deadline.fallback is None,
    )
    creds = result["Credentials"]
    expiration = creds.get("Expiration")
    return _from_sts(creds), expiration.timestamp() if hasattr(expiration, "timestamp") else None
