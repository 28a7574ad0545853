"""Run-time settings of one invocation, as parsed from the command line and environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SA_ROLE_ANNOTATIONS = ("eks.amazonaws.com/ecr-role-arn", "eks.amazonaws.com/role-arn")


@dataclass(frozen=True)
class Options:
    role_arn: str | None = None
    sa_role_annotations: tuple[str, ...] = DEFAULT_SA_ROLE_ANNOTATIONS
    sa_without_role: str = "node"  # "node": use node credentials; "fail": refuse
    mirrors: dict[str, str] = field(default_factory=dict)  # normalized mirror host[:port] -> ECR host
    # --registry-role / ECR_KUBELET_REGISTRY_ROLES: account id or normalized ECR host -> role ARN (roles.py)
    registry_roles: dict[str, str] = field(default_factory=dict)
    refresh_fraction: float = 0.5  # share of a token's life after which we fetch a new one
    expiry_margin: float = 300.0  # seconds before expiry at which a token is no longer handed out
    cache_dir: Path | None = None  # None: no on-disk cache
    timeout: float = 57.0  # whole-run deadline from process start, inside the kubelet's 60 s kill
    max_attempts: int = 3  # AWS attempts for failures other than throttling (AWS_MAX_ATTEMPTS)
    verbosity: int = 0
    metrics_file: Path | None = None  # --metrics-file / ECR_KUBELET_METRICS_FILE (metrics.py)
