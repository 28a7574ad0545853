"""Which AWS identity fetches a token, and how its credentials are obtained.

Planning only, standard library only (it runs on every cache hit): which identity, and the parts of it
that name it in the cache key. Turning the plan into credentials is credentials.py's, on a miss.
"""

from __future__ import annotations

from ecr_kubelet import logs, redact
from ecr_kubelet.errors import AuthError, BadInputError
from ecr_kubelet.models import Identity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ecr_kubelet.deadline import Deadline
    from ecr_kubelet.options import Options

log = logs.get(__name__)

# sts:AssumeRoleWithWebIdentity's WebIdentityToken length bounds (botocore's STS model).
WEB_IDENTITY_TOKEN_LENGTH = (4, 20000)


def plan_identity(token: str | None, annotations: dict[str, str], options: Options,
                  deadline: Deadline | None = None) -> Identity:
    if token is not None:
        from ecr_kubelet.claims import is_role_arn, jwt_claims  # a pod's token only: not on a node-mode hit

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

    node = resolve_node_source(options.environ, deadline)  # instance metadata asked within the run's deadline
    if node.fingerprint is None:
        log.info("not cacheable: the node identity cannot be named: %s", node.reason)
    if options.role_arn:
        return Identity(mode="role", role_arn=options.role_arn, node=node)
    return Identity(mode="node", node=node)
