"""Command line: `ecr-credential-provider [flags]` answers one kubelet request on stdin.

Exit codes: 0 answered (possibly with no credentials), 1 internal or unexpected AWS error (or stdout not
writable), 2 bad request, flags or local configuration, 3 no AWS credentials or access denied, 4 AWS
throttling / unavailable / timeout. Every subcommand ends through command.Command (one error line).
"""

from __future__ import annotations

import os
import sys

from ecr_kubelet import __version__, logs, redact
from ecr_kubelet.command import Command, StdoutError, verbosity_in, write_stdout
from ecr_kubelet.durations import format_go_duration
from ecr_kubelet.errors import EXIT_UNAVAILABLE, BadInputError
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
STDIN_FD = 0  # the request is read from the descriptor, never through sys.stdin (None when stdin is closed)
HELPER_PROG = "docker-credential-ecr-login"  # invoked under this name, we speak Docker's credential-helper protocol
HELPER_SUBCOMMAND = "docker-credential"  # `ecr-credential-provider docker-credential <verb>` does the same
log = logs.get("ecr_kubelet")


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


SUBCOMMANDS = (HELPER_SUBCOMMAND, "validate-config", "diagnose")


def check_plugin_settings(argv: list[str], env: Mapping[str, str]) -> None:
    """BadInputError if a kubelet run with these arguments and environment would not answer: the plugin's
    own parsing (validate-config checks each provider's `args` and `env` with it)."""
    if argv[:1] and argv[0] in SUBCOMMANDS:
        raise BadInputError(f"args start with the subcommand {argv[0]!r}: the plugin would run it, not answer")
    args = vars(build_parser(env, help_exits=False).parse_args(argv))
    if args.pop("help") or args["version"]:
        raise BadInputError("--help and --version print text instead of an answer, which the kubelet cannot read")
    options_from_args(args, env)


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
    return kubelet_main(argv)


def kubelet_main(argv: list[str]) -> int:
    """The kubelet mode: one request on stdin, one response on stdout, or one line on stderr (command.py)."""
    env = os.environ  # read here once: into the options, and for the secrets it may hold
    redact.register_environment(env)
    command = Command(PROG, verbosity_in(argv))
    observer = Observer()

    def body() -> int:
        options = parse_options(argv, env)
        if options is None:
            write_stdout(f"{PROG} {__version__} (commit {build_commit()})\n".encode())
            return 0
        command.verbosity = options.verbosity
        command.before_exit = lambda code: record_metrics(options, observer, "kubelet", code)
        logs.configure(options.verbosity, hold=True)
        from ecr_kubelet.provider import handle

        write_stdout(handle(STDIN_FD, options, observer, expire_action(options, observer, command)))
        return 0

    return command.run(body)


def record_metrics(options: Options | None, observer: Observer, mode: str, exit_code: int) -> None:
    """Count this run in the metrics file, if one is configured; never fails (metrics.record warns)."""
    if options is not None and options.metrics_file is not None:
        from ecr_kubelet import metrics

        metrics.record(options.metrics_file, observer, mode, exit_code)


def expire_action(options: Options, observer: Observer, command: Command) -> Callable[[Deadline], NoReturn]:
    """What ends a kubelet run whose deadline passed during something that ignores it (Deadline.backstop):
    the cached token if the run has one, else the one-line failure; counted in the metrics first."""
    def expire(deadline: Deadline) -> NoReturn:
        if deadline.fallback is not None:
            observer.credentials, observer.stale = True, True
            command.before_exit = None
            record_metrics(options, observer, "kubelet", 0)
            logs.release_held()
            try:  # noqa: SIM105 (contextlib is not loaded on a hit)
                sys.stderr.write(f"{PROG}: warning: deadline reached; answering with the cached token, still valid\n")
            except (OSError, ValueError, AttributeError):
                pass  # stderr gone: the answer matters more
            try:
                write_stdout(deadline.fallback)
            except StdoutError as exc:
                os._exit(command.fail(str(exc), exc.exit_code))
            os._exit(0)
        os._exit(command.fail(f"gave up after {deadline.timeout:g}s: the AWS credential source or API did not answer "
                              "in time (--timeout)", EXIT_UNAVAILABLE))

    return expire


def build_commit() -> str:
    try:
        from ecr_kubelet._build_info import BUILD_COMMIT  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "dev"
    return str(BUILD_COMMIT)
