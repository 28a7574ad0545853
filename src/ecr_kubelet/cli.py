"""Command line: `ecr-credential-provider [flags]` answers one kubelet request on stdin.

Exit codes: 0 answered (possibly with no credentials), 1 internal or unexpected AWS error,
2 bad request or flags, 3 no AWS credentials or access denied, 4 AWS throttling / unavailable / timeout.
"""

from __future__ import annotations

import os
import sys

from ecr_kubelet import __version__, logs, redact
from ecr_kubelet.durations import format_go_duration
from ecr_kubelet.errors import EXIT_INTERNAL, EXIT_UNAVAILABLE, BadInputError, ProviderError
from ecr_kubelet.observe import Observer
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
    from collections.abc import Callable, Mapping
    from typing import NoReturn

    from ecr_kubelet.deadline import Deadline

PROG = logs.PROG
HELPER_PROG = "docker-credential-ecr-login"  # invoked under this name, we speak Docker's credential-helper protocol
HELPER_SUBCOMMAND = "docker-credential"  # `ecr-credential-provider docker-credential <verb>` does the same
log = logs.get("ecr_kubelet")


def build_parser() -> argparse.ArgumentParser:
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise BadInputError(f"usage: {message} (see --help)")

    parser = Parser(
        prog=PROG,
        description="Kubelet image credential provider for Amazon ECR. Reads a CredentialProviderRequest "
        "on stdin and writes a CredentialProviderResponse on stdout. "
        "Also: `validate-config PATH` checks a kubelet CredentialProviderConfig; `diagnose IMAGE [flags]` "
        "explains, for a person, what the plugin does for an image and why it fails.",
    )
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
    parser.set_defaults(**flag_defaults(os.environ))
    return parser


def parse_options(argv: list[str], env: Mapping[str, str], *, helper: bool = False) -> Options | None:
    """Options for this run, or None when the arguments asked only for --version."""
    # The kubelet usually passes no arguments: skip building a parser on that hot path.
    args = vars(build_parser().parse_args(argv)) if argv else flag_defaults(env, helper)
    if args["version"]:
        return None
    return options_from_args(args, env)


def print_error(message: str) -> None:
    line = " ".join(redact.scrub(message).split())  # one line, whatever the message held
    sys.stderr.write(f"{PROG}: error: {line}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
        # The binary's launcher hands the name it was invoked by on to sys.argv[0] (packaging/entry.py).
        if os.path.basename(sys.argv[0]) == HELPER_PROG:
            argv = [HELPER_SUBCOMMAND, *argv]
    if argv[:1] == [HELPER_SUBCOMMAND]:
        from ecr_kubelet.dockerhelper import main as helper_main

        return helper_main(argv[1:])
    if argv[:1] == ["validate-config"]:
        from ecr_kubelet.validate_config import main as validate_main

        return int(validate_main(argv[1:]))
    if argv[:1] == ["diagnose"]:
        from ecr_kubelet.diagnose import main as diagnose_main

        return diagnose_main(argv[1:])
    env = os.environ  # read here once: into the options, and for the secrets it may hold
    redact.register_environment(env)
    verbose = any(a in ("-v", "--verbose") or a.startswith(("-vv", "--v=")) for a in argv)
    options: Options | None = None
    observer = Observer()
    try:
        options = parse_options(argv, env)
        if options is None:
            print(f"{PROG} {__version__} (commit {build_commit()})")
            return 0
        logs.configure(options.verbosity)
        from ecr_kubelet.provider import handle

        output = handle(sys.stdin.fileno(), options, observer, expire_action(options, observer))
    except ProviderError as exc:
        print_error(str(exc))
        record_metrics(options, observer, "kubelet", exc.exit_code)
        return exc.exit_code
    except Exception as exc:  # a bug: say what, not where, unless asked
        if verbose:
            log.exception("internal error")
        print_error(f"internal error: {type(exc).__name__}: {exc}")
        record_metrics(options, observer, "kubelet", EXIT_INTERNAL)
        return EXIT_INTERNAL
    _write_stdout(output)
    record_metrics(options, observer, "kubelet", 0)
    return 0


def record_metrics(options: Options | None, observer: Observer, mode: str, exit_code: int) -> None:
    """Count this run in the metrics file, if one is configured; never fails (metrics.record warns)."""
    if options is not None and options.metrics_file is not None:
        from ecr_kubelet import metrics

        metrics.record(options.metrics_file, observer, mode, exit_code)


def expire_action(options: Options, observer: Observer) -> Callable[[Deadline], NoReturn]:
    """What ends a kubelet run whose deadline passed during something that ignores it (Deadline.backstop):
    the cached token if the run has one, else the one-line failure; counted in the metrics first."""
    def expire(deadline: Deadline) -> NoReturn:
        if deadline.fallback is not None:
            observer.credentials, observer.stale = True, True
            record_metrics(options, observer, "kubelet", 0)
            sys.stderr.write(f"{PROG}: warning: deadline reached; answering with the cached token, still valid\n")
            _write_stdout(deadline.fallback)
            os._exit(0)
        record_metrics(options, observer, "kubelet", EXIT_UNAVAILABLE)
        print_error(f"gave up after {deadline.timeout:g}s: the AWS credential source or API did not answer in "
                    "time (--timeout)")
        os._exit(EXIT_UNAVAILABLE)

    return expire


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def build_commit() -> str:
    try:
        from ecr_kubelet._build_info import BUILD_COMMIT  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "dev"
    return str(BUILD_COMMIT)
