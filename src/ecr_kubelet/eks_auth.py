"""EKS Pod Identity's exchange (pod_identity.py plans the mode): the pod's service-account token for the
credentials of its association's role, with `eks-auth:AssumeRoleForPodIdentity`, then the ECR token with
them. botocore is loaded: a cache miss only.
"""

from __future__ import annotations

from ecr_kubelet import logs, redact
from ecr_kubelet.errors import AuthError, BadInputError, ProviderError
from ecr_kubelet.models import Value
from ecr_kubelet.pod_identity import OPERATION, SERVICE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from botocore.credentials import ReadOnlyCredentials
    from botocore.session import Session

    from ecr_kubelet.deadline import Deadline
    from ecr_kubelet.models import Identity, Registry, Token
    from ecr_kubelet.observe import Observer

log = logs.get(__name__)


class Exchanged(Value):
    """What AssumeRoleForPodIdentity answered (the credentials' secrets are registered for redaction)."""

    __slots__ = ("association", "credentials", "expiration", "role", "subject")
    _secret = ("credentials",)
    association: str
    role: str
    subject: str
    credentials: ReadOnlyCredentials
    expiration: float | None

    def __init__(self, association: str, role: str, subject: str, credentials: ReadOnlyCredentials,
                 expiration: float | None) -> None:
        self._init(association=association, role=role, subject=subject, credentials=credentials,
                   expiration=expiration)


def fetch_token(registry: Registry, identity: Identity, session: Session, deadline: Deadline, max_attempts: int,
                fetch_as: Callable[[Identity], Token], observer: Observer | None, env: Mapping[str, str]) -> Token:
    """The ECR token of the service account's associated role; for a service account without an
    association, `fetch_as` of the fallback identity (or AuthError under --sa-without-role fail)."""
    from ecr_kubelet import tokens

    pod = identity.pod_identity
    assert pod is not None and identity.web_identity_token is not None
    exchanged = exchange(pod.cluster, identity.web_identity_token, session, deadline, max_attempts, env)
    if observer is not None:
        observer.pod_identity = None if exchanged is None else {
            "association": exchanged.association, "role": exchanged.role, "subject": exchanged.subject}
    sub = identity.claims["sub"] if identity.claims else "the pod's service account"
    if exchanged is None:
        if pod.fallback is None:
            raise AuthError(f"{sub} has no EKS Pod Identity association in cluster {pod.cluster} (and no role "
                            "annotation) and --sa-without-role=fail")
        log.info("%s has no pod identity association in cluster %s: %s", sub, pod.cluster, pod.fallback.describe())
        return fetch_as(pod.fallback)
    log.info("pod identity association %s gives %s the role %s", exchanged.association, exchanged.subject,
             exchanged.role)
    token = tokens.fetch_token(registry, identity, session, deadline, max_attempts, credentials=exchanged.credentials)
    if exchanged.expiration is not None and (token.expires_at is None or exchanged.expiration < token.expires_at):
        log.info("token life capped at the pod identity credentials' (%s)", logs.when(exchanged.expiration))
        token = token.replace(expires_at=exchanged.expiration)
    return token


def exchange(cluster: str, token: str, session: Session, deadline: Deadline,
             max_attempts: int, env: Mapping[str, str]) -> Exchanged | None:
    """AssumeRoleForPodIdentity in the node's region, signed with the node's credentials; None when the
    service account has no association (ResourceNotFoundException). Throttling is retried until the
    deadline like every other call (awsapi); an invalid or expired token is an AuthError (exit 3)."""
    from datetime import datetime

    from botocore.credentials import ReadOnlyCredentials
    from botocore.exceptions import ClientError

    from ecr_kubelet.awsapi import ClientPool, call_with_retries, client_config
    from ecr_kubelet.models import Registry

    region = node_region(session, env)
    # eks-auth has no FIPS or dual-stack variant to follow from the registry: its regional endpoint.
    where = Registry(kind="private", host="", partition="", region=region, account=None)
    clients = ClientPool(lambda config: session.create_client(SERVICE, region_name=region, config=config))
    action = f"{OPERATION} in {region}"

    def attempt(current: Deadline) -> dict[str, object] | None:
        try:
            answer: dict[str, object] = clients.get(client_config(SERVICE, where, deadline=current)) \
                .assume_role_for_pod_identity(clusterName=cluster, token=token)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        return answer

    answer = call_with_retries(attempt, action, deadline, max_attempts, patient=deadline.fallback is None)
    if answer is None:
        return None
    try:
        creds = answer["credentials"]
        assert isinstance(creds, dict)
        access, secret, session_token = (str(creds[k]) for k in ("accessKeyId", "secretAccessKey", "sessionToken"))
        redact.register(secret, session_token)
        expiration = creds.get("expiration")
        association = answer.get("podIdentityAssociation") or {}
        role = answer.get("assumedRoleUser") or {}
        subject = answer.get("subject") or {}
        assert isinstance(association, dict) and isinstance(role, dict) and isinstance(subject, dict)
    except (KeyError, AssertionError):
        raise ProviderError(f"{action} answered without credentials") from None
    return Exchanged(
        association=str(association.get("associationArn", "?")), role=str(role.get("arn", "?")),
        subject=f"{subject.get('namespace', '?')}/{subject.get('serviceAccount', '?')}",
        credentials=ReadOnlyCredentials(access, secret, session_token),
        expiration=float(expiration.timestamp()) if isinstance(expiration, datetime) else None,
    )


def node_region(session: Session, env: Mapping[str, str]) -> str:
    """The node's region: as the SDKs configure it (tokens.node_region: AWS_REGION, which botocore alone
    ignores, then AWS_DEFAULT_REGION and the profile), else the instance's own from instance metadata (as
    the SDKs' region chain ends)."""
    from ecr_kubelet.tokens import node_region as configured_region

    region = configured_region(session, env)
    if region:
        return region
    from botocore.utils import InstanceMetadataRegionFetcher

    try:
        fetched = InstanceMetadataRegionFetcher(
            timeout=session.get_config_variable("metadata_service_timeout"),
            num_attempts=session.get_config_variable("metadata_service_num_attempts"),
            user_agent=session.user_agent(),
            config={"ec2_metadata_service_endpoint": session.get_config_variable("ec2_metadata_service_endpoint"),
                    "ec2_metadata_service_endpoint_mode":
                        session.get_config_variable("ec2_metadata_service_endpoint_mode")},
        ).retrieve_region()
    except Exception:
        fetched = None
    if not fetched:
        raise BadInputError(f"the node's region is unknown, and {OPERATION} is called there: set AWS_REGION in the "
                            "provider's env")
    return str(fetched)
