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

Planning is here, standard library only (it runs on every cache hit); the exchange is eks_auth.py's, on a miss.
"""

from __future__ import annotations

from ecr_kubelet import logs
from ecr_kubelet.errors import AuthError, BadInputError
from ecr_kubelet.models import Identity, PodIdentity
from ecr_kubelet.options import check_cluster_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ecr_kubelet.options import Options

log = logs.get(__name__)

AUDIENCE = "pods.eks.amazonaws.com"  # what eks-auth accepts, and the audience the EKS Pod Identity Agent requests
SERVICE = "eks-auth"
OPERATION = "eks-auth:AssumeRoleForPodIdentity"


def plan(token: str, options: Options) -> Identity:
    """The pod-identity identity of a request's token (its fallback is added per registry: with_fallback)."""
    from ecr_kubelet.claims import jwt_claims

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
