"""Which AWS identity fetches a token, and how its credentials are obtained.

Planning (which identity, and a cache fingerprint for it) uses the standard library only; turning the
plan into credentials (`credentials_for`) imports botocore and is done only on a cache miss.
"""

from __future__ import annotations

from ecr_kubelet import jsoncodec, logs, redact
from ecr_kubelet.errors import AuthError, BadInputError
from ecr_kubelet.models import Identity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from botocore.credentials import ReadOnlyCredentials
    from botocore.session import Session

    from ecr_kubelet.deadline import Deadline
    from ecr_kubelet.models import Registry
    from ecr_kubelet.options import Options

log = logs.get(__name__)

ROLE_ARN = r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}"
# sts:AssumeRoleWithWebIdentity's WebIdentityToken length bounds (botocore's STS model).
WEB_IDENTITY_TOKEN_LENGTH = (4, 20000)
_FROM_URLSAFE = str.maketrans("-_", "+/")


def plan_identity(token: str | None, annotations: dict[str, str], options: Options) -> Identity:
    if token is not None:
        redact.register(token)
        role = next((annotations[k] for k in options.sa_role_annotations if annotations.get(k)), None)
        if role is not None:
            if not is_role_arn(role):
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
        if options.eks_cluster_name is not None:
            from ecr_kubelet import pod_identity

            return pod_identity.plan(token, options)
        if options.sa_without_role == "fail":
            raise AuthError(
                "the pod's service account has none of the role annotations "
                f"{', '.join(options.sa_role_annotations)} and --sa-without-role=fail"
            )
        log.info("service account has no role annotation; using node credentials")
    from ecr_kubelet.node_source import resolve_node_source

    node = resolve_node_source(options.environ)
    if node.fingerprint is None:
        log.info("not cacheable: the node identity cannot be named: %s", node.reason)
    if options.role_arn:
        return Identity(mode="role", role_arn=options.role_arn, node=node)
    return Identity(mode="node", node=node)


def is_role_arn(value: str) -> bool:
    """An IAM role ARN, arn:PARTITION:iam::ACCOUNT:role/PATH/NAME (compiled only when a role is given)."""
    import re

    return re.fullmatch(ROLE_ARN, value, re.ASCII) is not None


def jwt_claims(token: str) -> dict[str, str] | None:
    """Issuer, subject and audience of a JWT, read without verifying it (STS verifies); None unless
    they are strings (the audience: a string or a list of them).

    The audience is one string: itself, or for several (or one that starts with "[") the JSON list of
    them, sorted, so that no two audiences read the same."""
    payload = jwt_payload(token)
    if payload is None:
        return None
    iss, sub, aud = payload.get("iss"), payload.get("sub"), payload.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
        audience = jsoncodec.dumps(sorted(set(aud)), compact=True)
    elif isinstance(aud, str):
        audience = jsoncodec.dumps([aud], compact=True) if aud.startswith("[") else aud
    else:
        return None
    if not (isinstance(iss, str) and isinstance(sub, str)):
        return None
    return {"iss": iss, "sub": sub, "aud": audience}


def jwt_payload(token: str) -> dict[str, object] | None:
    """A JWT's payload, decoded without verifying it; None if it is not one (anything goes: the token is
    the request's or a file's)."""
    import binascii  # base64.urlsafe_b64decode is this after a translate, without base64's import of re

    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        urlsafe = (parts[1] + "=" * (-len(parts[1]) % 4)).translate(_FROM_URLSAFE)
        payload = jsoncodec.loads(binascii.a2b_base64(urlsafe).decode())
    except (ValueError, binascii.Error, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


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
