"""Per-registry roles: `--registry-role REGISTRY=ROLE_ARN` (env ECR_KUBELET_REGISTRY_ROLES).

Images of a mapped registry get their token with credentials from `sts:AssumeRole` of that role, called
with the node identity: the default chain, or the role of `--role-arn` when that is set too (a role
chain: node -> --role-arn -> registry role). The registry role wins for its registry because it is the
more specific setting; `--role-arn` stays the node's own identity, the one cross-account trust policies
name, and keeps serving every registry without a mapping. Service-account mode (a pod token with a role
annotation) still wins over both: the pod's own role is the most specific identity of all.

A REGISTRY is a 12-digit account id, which maps that account's private registries in every region of the
role's partition (account ids are per partition), or an ECR registry host (any host family, public ECR
too), which maps that registry only and wins over its account's mapping. Parsing is standard library only
(it runs on every invocation with the option set); the STS call is made only on a cache miss.
"""

from __future__ import annotations

import re

from ecr_kubelet import logs
from ecr_kubelet.claims import is_role_arn
from ecr_kubelet.errors import BadInputError
from ecr_kubelet.registry import classify_host, normalize_host

TYPE_CHECKING = False
if TYPE_CHECKING:

    from ecr_kubelet.models import Identity, Registry

log = logs.get(__name__)

_ACCOUNT = re.compile(r"^\d{12}$")
_ROLE_PARTITION = re.compile(r"^arn:(?P<partition>aws[a-z-]*):iam::")


def split_env(value: str | None) -> list[str]:
    """ECR_KUBELET_REGISTRY_ROLES: `REGISTRY=ROLE_ARN` entries separated by commas, semicolons or white
    space (so a role whose name holds a comma can be mapped only with the flag)."""
    return [item for item in re.split(r"[,;\s]+", value or "") if item]


def parse_registry_roles(specs: list[str], source: str = "--registry-role") -> dict[str, str]:
    """{account id or normalized registry host: role ARN}; BadInputError (exit 2) for a malformed entry."""
    roles: dict[str, str] = {}
    for spec in specs:
        registry, sep, role = spec.partition("=")
        registry, role = registry.strip(), role.strip()
        if not sep or not registry or not role:
            raise BadInputError(f"{source} {_shown(spec)}: expected REGISTRY=ROLE_ARN")
        if not is_role_arn(role):
            raise BadInputError(
                f"{source} {_shown(spec)}: {role!r} is not an IAM role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)"
            )
        if _ACCOUNT.match(registry):
            key = registry
        else:
            target = classify_host(registry)
            if target is None:
                raise BadInputError(
                    f"{source} {_shown(spec)}: {registry!r} is neither a 12-digit account id nor an ECR registry host"
                )
            if target.partition != role_partition(role):
                raise BadInputError(
                    f"{source} {_shown(spec)}: the role is in partition {role_partition(role)}, "
                    f"the registry in {target.partition}"
                )
            key = target.host
        if roles.get(key, role) != role:
            raise BadInputError(f"{source}: {registry!r} is mapped to two different roles")
        roles[key] = role
    return roles


def _shown(spec: str) -> str:
    return repr(spec if len(spec) <= 300 else spec[:300] + "...")


def role_partition(role_arn: str) -> str:
    match = _ROLE_PARTITION.match(role_arn)
    return match["partition"] if match else ""


def role_for(registry: Registry, roles: dict[str, str]) -> str | None:
    """The role mapped to this registry: by its host first, else by its account in the role's partition."""
    role = roles.get(normalize_host(registry.host))
    if role is not None:
        return role
    if registry.account is not None:
        role = roles.get(registry.account)
        if role is not None and role_partition(role) == registry.partition:
            return role
    return None


def apply(identity: Identity, registry: Registry, roles: dict[str, str]) -> Identity:
    """The identity that fetches this registry's token once the per-registry roles are applied."""
    if not roles or identity.mode == "service-account":
        return identity
    role = role_for(registry, roles)
    if role is None:
        return identity
    return identity.replace(registry_role=role)
