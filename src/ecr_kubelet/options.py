"""The settings of one run: flags and environment, read once, here, into one `Options`.

Nothing else reads our environment variables (botocore reads its own, for the credential chain and
its configuration; `node_source` predicts that from `Options.environ`, the same snapshot). The
kubelet passes no flags and the Docker helper cannot, so the defaults come from the environment;
a flag wins over its variable.
"""

from __future__ import annotations

import os

from ecr_kubelet.errors import BadInputError
from ecr_kubelet.freshness import Freshness
from ecr_kubelet.models import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DEFAULT_SA_ROLE_ANNOTATIONS = ("eks.amazonaws.com/ecr-role-arn", "eks.amazonaws.com/role-arn")
MAX_TIMEOUT = 58.0  # counted from process start; the kubelet kills us at 60 s
DEFAULT_TIMEOUT = 57.0
# The Docker helper's: registry clients wait for it without a timeout, and CI jobs would rather fail fast.
DEFAULT_HELPER_TIMEOUT = 20.0
DEFAULT_EXPIRY_MARGIN = 300.0
DEFAULT_REFRESH_FRACTION = 0.5
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_LIMIT = 20
DEFAULT_ROOT_CACHE_DIR = "/var/cache/ecr-credential-provider"
REGISTRY_ROLES_VARIABLE = "ECR_KUBELET_REGISTRY_ROLES"
EKS_CLUSTER_NAME_VARIABLE = "ECR_KUBELET_EKS_CLUSTER_NAME"
# The variable that sets each flag's default (the Docker helper, which takes no flags, names these in its
# messages; --timeout's is read in that mode only).
FLAG_VARIABLES = {"--role-arn": "AWS_ECR_ROLE_ARN", "--timeout": "ECR_KUBELET_TIMEOUT",
                  "--registry-role": REGISTRY_ROLES_VARIABLE, "--metrics-file": "ECR_KUBELET_METRICS_FILE",
                  "--cache-dir": "ECR_KUBELET_CACHE_DIR", "--no-cache": "ECR_KUBELET_DISABLE_CACHE",
                  "--eks-cluster-name": EKS_CLUSTER_NAME_VARIABLE}
# Per-service endpoint override variables botocore honours (plus the global AWS_ENDPOINT_URL).
ENDPOINT_VARIABLES = {"ecr": "AWS_ENDPOINT_URL_ECR", "ecr-public": "AWS_ENDPOINT_URL_ECR_PUBLIC",
                      "sts": "AWS_ENDPOINT_URL_STS", "eks-auth": "AWS_ENDPOINT_URL_EKS_AUTH"}


class Options(Value):
    __slots__ = ("cache_dir", "eks_cluster_name", "endpoints", "environ", "freshness", "max_attempts", "metrics_file",
                 "mirrors", "registry_roles", "role_arn", "sa_role_annotations", "sa_without_role", "timeout",
                 "verbosity")
    role_arn: str | None  # --role-arn / AWS_ECR_ROLE_ARN: assumed with the node credentials first
    sa_role_annotations: tuple[str, ...]
    sa_without_role: str  # "node": use node credentials; "fail": refuse
    mirrors: dict[str, str]  # normalized mirror host[:port] -> ECR host (mirrors.py)
    registry_roles: dict[str, str]  # account id or normalized ECR host -> role ARN (roles.py)
    freshness: Freshness
    cache_dir: str | None  # None: no on-disk cache
    timeout: float  # whole-run deadline from process start, inside the kubelet's 60 s kill
    max_attempts: int  # AWS attempts for failures other than throttling (AWS_MAX_ATTEMPTS)
    verbosity: int
    metrics_file: str | None  # --metrics-file / ECR_KUBELET_METRICS_FILE (metrics.py)
    endpoints: dict[str, str]  # service -> API endpoint the operator configured (AWS_ENDPOINT_URL_*)
    environ: Mapping[str, str]  # the environment as it was read, for predicting the credential chain
    eks_cluster_name: str | None  # --eks-cluster-name: EKS Pod Identity for service-account tokens (pod_identity.py)

    def __init__(self, *, role_arn: str | None = None,
                 sa_role_annotations: tuple[str, ...] = DEFAULT_SA_ROLE_ANNOTATIONS,
                 sa_without_role: str = "node", mirrors: dict[str, str] | None = None,
                 registry_roles: dict[str, str] | None = None, freshness: Freshness | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, verbosity: int = 0,
                 metrics_file: str | os.PathLike[str] | None = None, endpoints: dict[str, str] | None = None,
                 environ: Mapping[str, str] | None = None, eks_cluster_name: str | None = None) -> None:
        self._init(role_arn=role_arn, sa_role_annotations=sa_role_annotations, sa_without_role=sa_without_role,
                   mirrors=mirrors or {}, registry_roles=registry_roles or {},
                   freshness=freshness or Freshness(DEFAULT_REFRESH_FRACTION, DEFAULT_EXPIRY_MARGIN),
                   cache_dir=None if cache_dir is None else os.fspath(cache_dir), timeout=timeout,
                   max_attempts=max_attempts, verbosity=verbosity,
                   metrics_file=None if metrics_file is None else os.fspath(metrics_file),
                   endpoints=endpoints if endpoints is not None else configured_endpoints(os.environ),
                   environ=environ if environ is not None else dict(os.environ), eks_cluster_name=eks_cluster_name)


def flag_defaults(env: Mapping[str, str], helper: bool = False) -> dict[str, Any]:
    """Every flag's value when it is absent; several come from the environment.

    `helper`: the Docker credential-helper mode, which takes no flags; it also honours the variables of
    docker-credential-ecr-login, so that it drops in for it (ours win where both are set).
    """
    cache_dir_variable = FLAG_VARIABLES["--cache-dir"]
    cache_dir = env.get(cache_dir_variable)
    no_cache = _truthy(env.get(FLAG_VARIABLES["--no-cache"]))
    verbose, timeout = 0, None  # None: the default, which needs no parsing
    if helper:
        timeout = env.get(FLAG_VARIABLES["--timeout"]) or None
        if cache_dir is None and env.get("AWS_ECR_CACHE_DIR") is not None:
            # As docker-credential-ecr-login takes it: empty is its default ~/.ecr, relative is from the
            # working directory (the helper warns of both; trust.py still decides whether it is used).
            cache_dir = os.path.abspath(os.path.expanduser(env["AWS_ECR_CACHE_DIR"] or "~/.ecr"))
            cache_dir_variable = "AWS_ECR_CACHE_DIR"
        no_cache = no_cache or bool(env.get("AWS_ECR_DISABLE_CACHE"))  # any value, as there
        level = env.get("ECR_KUBELET_VERBOSE", "").strip()
        verbose = int(level) if level.isdigit() else 1 if _truthy(level) else 0
    metrics_variable = FLAG_VARIABLES["--metrics-file"]
    metrics = env.get(metrics_variable)
    return {
        "version": False, "verbose": verbose, "klog_verbosity": 0,
        "role_arn": env.get(FLAG_VARIABLES["--role-arn"]) or None,
        "sa_role_annotation": None, "sa_without_role": "node", "mirror": [], "registry_role": [],
        "metrics_file": None if metrics is None else absolute_path(metrics, metrics_variable),
        "refresh_fraction": DEFAULT_REFRESH_FRACTION, "expiry_margin": None,
        "cache_dir": None if cache_dir is None else absolute_path(cache_dir, cache_dir_variable),
        "no_cache": no_cache, "timeout": timeout,
        "default_timeout": DEFAULT_HELPER_TIMEOUT if helper else DEFAULT_TIMEOUT,  # a number: parsing costs `re`
        "eks_cluster_name": env.get(FLAG_VARIABLES["--eks-cluster-name"]) or None,
    }


def options_from_args(args: Mapping[str, Any], env: Mapping[str, str]) -> Options:
    """Check the parsed flags (with their environment defaults) and turn them into Options."""
    if not 0 < args["refresh_fraction"] <= 1:
        raise BadInputError("--refresh-fraction must be greater than 0 and at most 1")
    margin = _duration(args["expiry_margin"], DEFAULT_EXPIRY_MARGIN, "--expiry-margin")
    timeout = _duration(args["timeout"], args.get("default_timeout", DEFAULT_TIMEOUT), "--timeout")
    if margin < 0:
        raise BadInputError(f"--expiry-margin must not be negative, got {args['expiry_margin']!r}")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise BadInputError(f"--timeout must be more than 0s and at most {MAX_TIMEOUT:g}s (the kubelet kills plugins "
                            f"at 60s), got {args['timeout']!r}")
    role_arn = args["role_arn"]
    if role_arn == "":  # given empty on the command line (an empty AWS_ECR_ROLE_ARN means unset)
        raise BadInputError("--role-arn must not be empty")
    if any(not key for key in args["sa_role_annotation"] or ()):
        raise BadInputError("--sa-role-annotation must not be empty")
    if role_arn:
        from ecr_kubelet.claims import is_role_arn

        if not is_role_arn(role_arn):
            raise BadInputError("--role-arn is not an IAM role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)")
    cluster = args.get("eks_cluster_name")
    if cluster is not None:
        from_env = cluster == env.get(EKS_CLUSTER_NAME_VARIABLE)
        check_cluster_name(cluster, EKS_CLUSTER_NAME_VARIABLE if from_env else "--eks-cluster-name")
    klog = args["klog_verbosity"]
    return Options(
        role_arn=role_arn,
        sa_role_annotations=tuple(args["sa_role_annotation"] or DEFAULT_SA_ROLE_ANNOTATIONS),
        sa_without_role=args["sa_without_role"],
        mirrors=_mirrors(args["mirror"]),
        registry_roles=_registry_roles(args["registry_role"], env),
        metrics_file=args["metrics_file"],
        freshness=Freshness(args["refresh_fraction"], margin),
        cache_dir=None if args["no_cache"] else (args["cache_dir"] or default_cache_dir(env)),
        timeout=timeout,
        max_attempts=max_attempts(env),
        verbosity=max(args["verbose"] or 0, 2 if klog >= 4 else 1 if klog >= 2 else 0),
        endpoints=configured_endpoints(env),
        environ=env,
        eks_cluster_name=cluster,
    )


# ClusterName in botocore's eks-auth model: 1 to 100 characters, [0-9A-Za-z][A-Za-z0-9\-_]*.
CLUSTER_NAME_LENGTH = 100
_CLUSTER_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


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


def absolute_path(value: str, name: str) -> str:
    """A path flag or variable: absolute, or a usage error (an empty one would mean the working
    directory, which must never be made private or written to)."""
    if not value or not os.path.isabs(value) or "\0" in value:
        raise BadInputError(f"{name} must be an absolute path, got {value!r}")
    return os.path.normpath(value)


def default_cache_dir(env: Mapping[str, str]) -> str:
    if os.geteuid() == 0:
        return DEFAULT_ROOT_CACHE_DIR
    xdg = env.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative value is invalid and ignored
        return os.path.join(xdg, "ecr-credential-provider")
    home = env.get("HOME") or os.path.expanduser("~")
    if not os.path.isabs(home):
        raise BadInputError(f"HOME must be an absolute path for the default cache directory, got {home!r} "
                            "(or set --cache-dir)")
    return os.path.join(home, ".cache", "ecr-credential-provider")


def max_attempts(env: Mapping[str, str]) -> int:
    text = (env.get("AWS_MAX_ATTEMPTS") or "").strip()
    if not text:
        return DEFAULT_MAX_ATTEMPTS
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_ATTEMPTS_LIMIT:
        raise BadInputError(f"AWS_MAX_ATTEMPTS must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}, got {text!r}")
    return int(text)


def configured_endpoints(env: Mapping[str, str]) -> dict[str, str]:
    """The custom API endpoint the operator set per service (VPC endpoint, proxy, test server)."""
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return {}
    found = {service: env.get(variable) or env.get("AWS_ENDPOINT_URL") for service, variable in
             ENDPOINT_VARIABLES.items()}
    return {service: url for service, url in found.items() if url}


def _duration(text: str | None, default: float, name: str) -> float:
    if text is None:
        return default
    from ecr_kubelet.durations import DurationError, parse_go_duration

    try:
        return parse_go_duration(text)
    except DurationError as exc:
        raise BadInputError(f"{name}: {exc}") from None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _mirrors(specs: list[str]) -> dict[str, str]:
    if not specs:
        return {}
    from ecr_kubelet.mirrors import parse_mirrors

    return parse_mirrors(specs)


def _registry_roles(flags: list[str], env: Mapping[str, str]) -> dict[str, str]:
    """ECR_KUBELET_REGISTRY_ROLES, then --registry-role: a flag wins over the variable for one registry."""
    variable = env.get(REGISTRY_ROLES_VARIABLE)
    if not variable and not flags:
        return {}
    from ecr_kubelet import roles

    mapped = roles.parse_registry_roles(roles.split_env(variable), REGISTRY_ROLES_VARIABLE)
    mapped.update(roles.parse_registry_roles(flags))
    return mapped
