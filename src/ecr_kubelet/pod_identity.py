"""EKS Pod Identity: the pod's service-account token exchanged with `eks-auth:AssumeRoleForPodIdentity`.

With `--eks-cluster-name NAME` (env ECR_KUBELET_EKS_CLUSTER_NAME), a request that carries a service-account
token and no role annotation is served with the role of the service account's pod identity association:
the token goes to `AssumeRoleForPodIdentity` (`clusterName`, `token`) in the node's region, signed with the
node's credentials (its default chain, never `--role-arn`: the node role is what EKS's worker node policy
grants `eks-auth:AssumeRoleForPodIdentity`), and the returned credentials fetch the ECR token. A service
account without an association (`ResourceNotFoundException`) follows `--sa-without-role`: the node identity
(with `--role-arn` and `--registry-role` as usual) or a failure.

A role annotation wins (identity.plan_identity): it is the explicit per-workload setting, the one the AWS
SDKs prefer too (web identity comes before container credentials in their chains), so removing the
annotation is the switch from IRSA to Pod Identity. `--registry-role` does not apply to an associated
service account, as it does not apply to an annotated one: the pod's own role is the most specific identity.

Cache: a service account's tokens are keyed by the cluster, the eks-auth endpoint, the token's issuer,
subject and audience, and what a service account without an association would get; a hit makes no eks-auth
or ECR call. When the exchange finds no association the node identity's token is kept under that key too,
so the next pods of that service account do not ask eks-auth again before the refresh point either. A token
lives no longer than the credentials that fetched it, so its expiry is capped at theirs.

Planning is standard library only (it runs on every cache hit); the exchange imports botocore, on a miss.
"""

from __future__ import annotations

from ecr_kubelet import logs, redact
from ecr_kubelet.errors import AuthError, BadInputError, ProviderError
from ecr_kubelet.models import Identity, Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from botocore.credentials import ReadOnlyCredentials
    from botocore.session import Session

    from ecr_kubelet.deadline import Deadline
    from ecr_kubelet.models import Registry, Token
    from ecr_kubelet.observe import Observer
    from ecr_kubelet.options import Options

log = logs.get(__name__)

AUDIENCE = "pods.eks.amazonaws.com"  # what eks-auth accepts, and the audience the EKS Pod Identity Agent requests
SERVICE = "eks-auth"
OPERATION = "eks-auth:AssumeRoleForPodIdentity"
# ClusterName in botocore's eks-auth model: 1 to 100 characters, [0-9A-Za-z][A-Za-z0-9\-_]*.
CLUSTER_NAME_LENGTH = 100
_CLUSTER_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class PodIdentity(Value):
    """What pod-identity mode knows before calling eks-auth: the cluster, the endpoint override, and the
    identity a service account without an association gets (None: --sa-without-role fail)."""

    __slots__ = ("cluster", "endpoint", "fallback")
    cluster: str
    endpoint: str  # AWS_ENDPOINT_URL_EKS_AUTH (or AWS_ENDPOINT_URL), "" for the regional endpoint
    fallback: Identity | None

    def __init__(self, cluster: str, endpoint: str, fallback: Identity | None) -> None:
        self._init(cluster=cluster, endpoint=endpoint, fallback=fallback)

    def fingerprint(self, claims: dict[str, str] | None) -> str | None:
        """The identity part of the cache key. Its "pod-identity=" prefix begins no other mode's
        fingerprint (IRSA's is "web-identity=", the node's its credential source), so a pod-identity
        key never equals another mode's."""
        if claims is None:
            return None  # not a JWT: eks-auth judges it every time
        if self.fallback is None:
            without = "fail"
        else:
            fallback = self.fallback.fingerprint()
            if fallback is None:
                return None  # the node identity cannot be named now: what a pod without association gets is unknown
            without = f"[{fallback}]"
        return (f"pod-identity={self.cluster};endpoint={self.endpoint};iss={claims['iss']};sub={claims['sub']};"
                f"aud={claims['aud']};without-association={without}")

    def describe(self, claims: dict[str, str] | None) -> str:
        sub = claims["sub"] if claims else "unknown subject"
        return f"service account {sub} through EKS Pod Identity (cluster {self.cluster})"


def check_cluster_name(name: str, source: str = "--eks-cluster-name") -> str:
    """A cluster name as eks-auth's model allows it; BadInputError (exit 2) naming `source` otherwise. String
    methods, not a pattern: this runs on every invocation with the option set, cache hits included."""
    if not name:
        raise BadInputError(f"{source} must not be empty")
    if (len(name) > CLUSTER_NAME_LENGTH or not set(name) <= _CLUSTER_NAME_CHARACTERS
            or not (name[0].isascii() and name[0].isalnum())):
        shown = name if len(name) <= 120 else name[:120] + "..."
        raise BadInputError(f"{source} {shown!r} is not an EKS cluster name (1 to {CLUSTER_NAME_LENGTH} "
                            "letters, digits, '-' and '_', starting with a letter or digit)")
    return name


def plan(token: str, options: Options) -> Identity:
    """The pod-identity identity of a request's token (its fallback is added per registry: with_fallback)."""
    from ecr_kubelet.identity import jwt_claims

    assert options.eks_cluster_name is not None
    if not (token.isascii() and token.isprintable() and " " not in token):
        raise BadInputError("serviceAccountToken must be printable ASCII without spaces (a JWT)")
    claims = jwt_claims(token)
    if claims is not None and AUDIENCE not in claims["aud"].split(","):
        # eks-auth would refuse it; say why here, without a call (the kubelet config names the audience).
        raise AuthError(f"the service-account token's audience is {claims['aud']!r}; EKS Pod Identity needs "
                        f"{AUDIENCE} (the provider's tokenAttributes.serviceAccountTokenAudience)")
    endpoint = options.endpoints.get(SERVICE, "")
    return Identity(mode="pod-identity", web_identity_token=token, claims=claims,
                    pod_identity=PodIdentity(options.eks_cluster_name, endpoint, None))


def with_fallback(identity: Identity, fallback: Identity | None) -> Identity:
    """The identity with what a service account without an association gets (provider.choose_identity)."""
    assert identity.pod_identity is not None
    return identity.replace(pod_identity=identity.pod_identity.replace(fallback=fallback))


def provider_config_issues(cluster_flags: list[tuple[int, str | None]], env: dict[str, str],
                           token_attributes: Any) -> list[tuple[str, str, str]]:
    """validate-config: what a provider that turns this mode on (flag or variable) needs from its config, as
    (field path under the provider, message, "error" or "warning")."""
    from ecr_kubelet.options import EKS_CLUSTER_NAME_VARIABLE

    issues: list[tuple[str, str, str]] = []
    cluster, where, source = env.get(EKS_CLUSTER_NAME_VARIABLE) or None, "env", EKS_CLUSTER_NAME_VARIABLE
    for index, value in cluster_flags:  # the last flag wins, and a flag wins over the variable
        cluster, where, source = value, f"args[{index}]", "--eks-cluster-name"
        if value is None:
            issues.append((where, "--eks-cluster-name needs a value NAME: every pull would fail (exit 2)", "error"))
    if cluster is None:
        return issues
    try:
        check_cluster_name(cluster, source)
    except BadInputError as exc:
        issues.append((where, f"{exc}: every pull would fail (exit 2)", "error"))
    ta = token_attributes
    if ta is None:
        issues.append(("tokenAttributes", f"{source} is set but the kubelet passes no service-account token without "
                       f"tokenAttributes (serviceAccountTokenAudience {AUDIENCE}, cacheType ServiceAccount): "
                       "EKS Pod Identity never runs", "error"))
        return issues
    if ta.service_account_token_audience and ta.service_account_token_audience != AUDIENCE:
        issues.append(("tokenAttributes.serviceAccountTokenAudience",
                       f"{ta.service_account_token_audience!r}: EKS Pod Identity needs {AUDIENCE}; every pull with a "
                       "service-account token and no role annotation would fail (exit 3)", "error"))
    if ta.cache_type == "Token":
        issues.append(("tokenAttributes.cacheType", "Token makes the kubelet run the plugin for every pod; the "
                       "credentials of Pod Identity depend on the service account: use ServiceAccount", "warning"))
    required = ta.required_service_account_annotation_keys or []
    if required:
        issues.append(("tokenAttributes.requiredServiceAccountAnnotationKeys",
                       "the kubelet skips the plugin for service accounts without these annotations, and a Pod "
                       "Identity service account has none: its pods pull without plugin credentials", "error"))
    elif ta.optional_service_account_annotation_keys:
        issues.append(("tokenAttributes.optionalServiceAccountAnnotationKeys",
                       "a service account with one of these annotations uses IRSA (the annotation wins) with this "
                       f"token, whose audience is {AUDIENCE}: its role's OIDC provider must list that audience as a "
                       "client ID and its trust policy's aud condition must name it", "warning"))
    return issues


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
