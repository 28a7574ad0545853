"""The plugin's flags and their environment defaults, parsed into one Options (options.py): for the
kubelet mode, `diagnose` (the same flags plus its own) and the Docker helper (the environment alone),
and for validate-config, which runs this same parsing on every provider's `args` and `env`.
"""

from __future__ import annotations

import os

from ecr_kubelet import logs
from ecr_kubelet.durations import format_go_duration
from ecr_kubelet.errors import BadInputError
from ecr_kubelet.options import (
    DEFAULT_EXPIRY_MARGIN,
    DEFAULT_REFRESH_FRACTION,
    DEFAULT_SA_ROLE_ANNOTATIONS,
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    Options,
    absolute_path,
    flag_defaults,
    options_from_args,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from typing import NoReturn

PROG = logs.PROG
HELPER_PROG = logs.HELPER_PROG
HELPER_SUBCOMMAND = "docker-credential"  # `ecr-credential-provider docker-credential <verb>`: the Docker helper
SUBCOMMANDS = (HELPER_SUBCOMMAND, "validate-config", "diagnose")


def build_parser(env: Mapping[str, str] | None = None, *, help_exits: bool = True) -> argparse.ArgumentParser:
    """The plugin's flags, their defaults from `env` (ours by default). `help_exits=False` (checking a
    config's args) makes -h/--help a flag to report rather than text to print."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise BadInputError(f"usage: {message} (see --help)")

    parser = Parser(
        add_help=help_exits,
        prog=PROG,
        description="Kubelet image credential provider for Amazon ECR. Reads a CredentialProviderRequest "
        "on stdin and writes a CredentialProviderResponse on stdout. "
        "Also: `validate-config PATH` checks a kubelet CredentialProviderConfig; `diagnose IMAGE [flags]` "
        "explains, for a person, what the plugin does for an image and why it fails.",
    )
    if not help_exits:
        parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--version", action="store_true", help="print version and build commit, then exit")
    parser.add_argument("-v", "--verbose", action="count",
                        help="more detail on stderr (-v info, -vv debug); secrets are never printed")
    parser.add_argument("--v", type=int, metavar="N", dest="klog_verbosity",
                        help="klog-style verbosity, as other kubelet providers take it (2+ is -v, 4+ is -vv)")
    parser.add_argument("--role-arn",
                        help="IAM role to assume with the node credentials first (env AWS_ECR_ROLE_ARN)")
    parser.add_argument("--sa-role-annotation", action="append", metavar="KEY",
                        help="service-account annotation holding the role ARN, in order of preference "
                        f"(repeatable; default {', '.join(DEFAULT_SA_ROLE_ANNOTATIONS)})")
    parser.add_argument("--sa-without-role", choices=("node", "fail"),
                        help="a service-account token without a role annotation: use node credentials "
                        "(default) or fail")
    parser.add_argument("--eks-cluster-name", metavar="NAME",
                        help="EKS Pod Identity: exchange a pod's service-account token (audience "
                        "pods.eks.amazonaws.com) with eks-auth:AssumeRoleForPodIdentity for this cluster when its "
                        "service account has no role annotation (env ECR_KUBELET_EKS_CLUSTER_NAME)")
    parser.add_argument("--mirror", action="append", metavar="HOST=ECR_HOST",
                        help="answer for mirror HOST[:PORT] with the credentials of ECR registry ECR_HOST "
                        "(repeatable)")
    parser.add_argument("--registry-role", action="append", metavar="REGISTRY=ROLE_ARN",
                        help="fetch tokens for REGISTRY (a 12-digit account id or an ECR registry host) with "
                        "credentials from sts:AssumeRole of ROLE_ARN, assumed with the node identity (after "
                        "--role-arn); repeatable; also env ECR_KUBELET_REGISTRY_ROLES (comma-separated)")
    parser.add_argument("--metrics-file", type=lambda value: absolute_path(value, "--metrics-file"), metavar="PATH",
                        help="keep Prometheus counters of every run in this file, for node_exporter's textfile "
                        "collector (env ECR_KUBELET_METRICS_FILE)")
    parser.add_argument("--refresh-fraction", type=float, metavar="F",
                        help="refresh a token after this share of its lifetime (0 < F <= 1, default "
                        f"{DEFAULT_REFRESH_FRACTION:g}); the cacheDuration we return ends there")
    parser.add_argument("--expiry-margin", metavar="DURATION",
                        help="never hand out a token this close to expiry (Go duration, default "
                        f"{format_go_duration(DEFAULT_EXPIRY_MARGIN)})")
    parser.add_argument("--cache-dir", type=lambda value: absolute_path(value, "--cache-dir"), metavar="DIR",
                        help="token cache directory (env ECR_KUBELET_CACHE_DIR; default "
                        "/var/cache/ecr-credential-provider as root, else ~/.cache/ecr-credential-provider)")
    parser.add_argument("--no-cache", action="store_true",
                        help="do not use the on-disk token cache (env ECR_KUBELET_DISABLE_CACHE=1)")
    parser.add_argument("--timeout", metavar="DURATION",
                        help="deadline for the whole run, from process start (Go duration, default "
                        f"{format_go_duration(DEFAULT_TIMEOUT)}, at most {MAX_TIMEOUT:g}s)")
    parser.set_defaults(**flag_defaults(os.environ if env is None else env))
    return parser


def parse_options(argv: list[str], env: Mapping[str, str], *, helper: bool = False) -> Options | None:
    """Options for this run, or None when the arguments asked only for --version."""
    # The kubelet usually passes no arguments: skip building a parser on that hot path.
    args = vars(build_parser().parse_args(argv)) if argv else flag_defaults(env, helper)
    if args["version"]:
        return None
    return options_from_args(args, env)


def check_plugin_settings(argv: list[str], env: Mapping[str, str]) -> None:
    """BadInputError if a kubelet run with these arguments and environment would not answer: the plugin's
    own parsing (validate-config checks each provider's `args` and `env` with it)."""
    if argv[:1] and argv[0] in SUBCOMMANDS:
        raise BadInputError(f"args start with the subcommand {argv[0]!r}: the plugin would run it, not answer")
    args = vars(build_parser(env, help_exits=False).parse_args(argv))
    if args.pop("help") or args["version"]:
        raise BadInputError("--help and --version print text instead of an answer, which the kubelet cannot read")
    options_from_args(args, env)
