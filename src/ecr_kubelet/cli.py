"""Command line: `ecr-credential-provider [flags]` answers one kubelet request on stdin.

Exit codes: 0 answered (possibly with no credentials), 1 internal or unexpected AWS error,
2 bad request or flags, 3 no AWS credentials or access denied, 4 AWS throttling / unavailable / timeout.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NoReturn

from ecr_kubelet import __version__, redact
from ecr_kubelet.deadline import Deadline, arm_backstop, disarm_backstop
from ecr_kubelet.durations import DurationError, parse_go_duration
from ecr_kubelet.errors import EXIT_INTERNAL, EXIT_UNAVAILABLE, BadInputError, ProviderError
from ecr_kubelet.observe import Observer
from ecr_kubelet.options import DEFAULT_SA_ROLE_ANNOTATIONS, Options

if TYPE_CHECKING:
    import argparse

PROG = "ecr-credential-provider"
HELPER_PROG = "docker-credential-ecr-login"  # invoked under this name, we speak Docker's credential-helper protocol
HELPER_SUBCOMMAND = "docker-credential"  # `ecr-credential-provider docker-credential <verb>` does the same
MAX_TIMEOUT = 58.0  # counted from process start; the kubelet kills us at 60 s
DEFAULT_TIMEOUT = "57s"
MAX_ATTEMPTS_LIMIT = 20
log = logging.getLogger("ecr_kubelet")


def flag_defaults(helper: bool = False) -> dict[str, Any]:
    """Every flag's value when it is absent; several come from the environment.

    `helper`: the Docker credential-helper mode, which takes no flags; it also honours the variables of
    docker-credential-ecr-login, so that it drops in for it (ours win where both are set).
    """
    env = os.environ
    env_cache_dir = env.get("ECR_KUBELET_CACHE_DIR")
    no_cache = _truthy(env.get("ECR_KUBELET_DISABLE_CACHE"))
    verbose, timeout = 0, DEFAULT_TIMEOUT
    cache_dir_variable = "ECR_KUBELET_CACHE_DIR"
    if helper:
        timeout = env.get("ECR_KUBELET_TIMEOUT") or timeout
        if env_cache_dir is None and env.get("AWS_ECR_CACHE_DIR") is not None:
            env_cache_dir = os.path.expanduser(env["AWS_ECR_CACHE_DIR"])
            cache_dir_variable = "AWS_ECR_CACHE_DIR"
        no_cache = no_cache or bool(env.get("AWS_ECR_DISABLE_CACHE"))  # any value, as there
        level = env.get("ECR_KUBELET_VERBOSE", "").strip()
        verbose = int(level) if level.isdigit() else 1 if _truthy(level) else 0
    return {
        "version": False, "verbose": verbose, "klog_verbosity": 0,
        "role_arn": env.get("AWS_ECR_ROLE_ARN") or None,
        "sa_role_annotation": None, "sa_without_role": "node", "mirror": [], "registry_role": [],
        "metrics_file": None if env.get("ECR_KUBELET_METRICS_FILE") is None
        else absolute_path(env["ECR_KUBELET_METRICS_FILE"], "ECR_KUBELET_METRICS_FILE"),
        "refresh_fraction": 0.5, "expiry_margin": "5m0s",
        "cache_dir": None if env_cache_dir is None else absolute_path(env_cache_dir, cache_dir_variable),
        "no_cache": no_cache, "timeout": timeout,
    }


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
                        help="refresh a token after this share of its lifetime (0 < F <= 1, default 0.5); "
                        "the cacheDuration we return ends there")
    parser.add_argument("--expiry-margin", metavar="DURATION",
                        help="never hand out a token this close to expiry (Go duration, default 5m0s)")
    parser.add_argument("--cache-dir", type=lambda value: absolute_path(value, "--cache-dir"), metavar="DIR",
                        help="token cache directory (env ECR_KUBELET_CACHE_DIR; default "
                        "/var/cache/ecr-credential-provider as root, else ~/.cache/ecr-credential-provider)")
    parser.add_argument("--no-cache", action="store_true",
                        help="do not use the on-disk token cache (env ECR_KUBELET_DISABLE_CACHE=1)")
    parser.add_argument("--timeout", metavar="DURATION",
                        help="deadline for the whole run, from process start (Go duration, default "
                        f"{DEFAULT_TIMEOUT}, at most {MAX_TIMEOUT:g}s)")
    parser.set_defaults(**flag_defaults())
    return parser


def absolute_path(value: str, name: str) -> Path:
    """A path flag or variable: absolute, or a usage error (an empty one would mean the working
    directory, which must never be made private or written to)."""
    if not value or not os.path.isabs(value) or "\0" in value:
        raise BadInputError(f"{name} must be an absolute path, got {value!r}")
    return Path(os.path.normpath(value))


def max_attempts_from_env() -> int:
    text = (os.environ.get("AWS_MAX_ATTEMPTS") or "").strip()
    if not text:
        return Options.max_attempts
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_ATTEMPTS_LIMIT:
        raise BadInputError(f"AWS_MAX_ATTEMPTS must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}, got {text!r}")
    return int(text)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def parse_options(argv: list[str], *, helper: bool = False) -> Options | None:
    """Options for this run, or None when the arguments asked only for --version."""
    # The kubelet usually passes no arguments: skip building a parser on that hot path.
    args: Any = build_parser().parse_args(argv) if argv else SimpleNamespace(**flag_defaults(helper))
    if args.version:
        return None
    return options_from_args(args)


def options_from_args(args: Any) -> Options:
    """Check the parsed flags (with their environment defaults) and turn them into Options."""
    if not 0 < args.refresh_fraction <= 1:
        raise BadInputError("--refresh-fraction must be greater than 0 and at most 1")
    try:
        margin = parse_go_duration(args.expiry_margin)
    except DurationError as exc:
        raise BadInputError(f"--expiry-margin: {exc}") from None
    try:
        timeout = parse_go_duration(args.timeout)
    except DurationError as exc:
        raise BadInputError(f"--timeout: {exc}") from None
    if margin < 0:
        raise BadInputError(f"--expiry-margin must not be negative, got {args.expiry_margin!r}")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise BadInputError(f"--timeout must be more than 0s and at most {MAX_TIMEOUT:g}s (the kubelet kills plugins "
                            f"at 60s), got {args.timeout!r}")
    if args.role_arn == "":  # given empty on the command line (an empty AWS_ECR_ROLE_ARN means unset)
        raise BadInputError("--role-arn must not be empty")
    if any(not key for key in args.sa_role_annotation or ()):
        raise BadInputError("--sa-role-annotation must not be empty")
    if args.role_arn:
        from ecr_kubelet.identity import ROLE_ARN

        if not ROLE_ARN.match(args.role_arn):
            raise BadInputError("--role-arn is not an IAM role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)")
    from ecr_kubelet.cache import default_cache_dir

    return Options(
        role_arn=args.role_arn,
        sa_role_annotations=tuple(args.sa_role_annotation or DEFAULT_SA_ROLE_ANNOTATIONS),
        sa_without_role=args.sa_without_role,
        mirrors=parse_mirrors(args.mirror),
        registry_roles=_registry_roles(args.registry_role),
        metrics_file=args.metrics_file,
        refresh_fraction=args.refresh_fraction,
        expiry_margin=margin,
        cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()),
        timeout=timeout,
        max_attempts=max_attempts_from_env(),
        verbosity=max(args.verbose, 2 if args.klog_verbosity >= 4 else 1 if args.klog_verbosity >= 2 else 0),
    )


def _registry_roles(flags: list[str]) -> dict[str, str]:
    """ECR_KUBELET_REGISTRY_ROLES, then --registry-role: a flag wins over the variable for one registry."""
    from ecr_kubelet import roles

    env = os.environ.get(roles.ENV_VARIABLE)
    if not env and not flags:
        return {}
    mapped = roles.parse_registry_roles(roles.split_env(env), roles.ENV_VARIABLE)
    mapped.update(roles.parse_registry_roles(flags))
    return mapped


def parse_mirrors(specs: list[str]) -> dict[str, str]:
    from ecr_kubelet.mirrors import parse_mirrors as parse

    return parse(specs)


def configure_logging(verbosity: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    handler.addFilter(redact.RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING)
    # botocore's own debug output includes request bodies and signed headers: never raise it.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


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
    redact.register_environment()
    verbose = any(a in ("-v", "--verbose") or a.startswith(("-vv", "--v=")) for a in argv)
    options: Options | None = None
    observer = Observer()
    try:
        options = parse_options(argv)
        if options is None:
            print(f"{PROG} {__version__} (commit {build_commit()})")
            return 0
        configure_logging(options.verbosity)
        output = _answer_stdin(options, observer)
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


def _answer_stdin(options: Options, observer: Observer) -> bytes:
    from ecr_kubelet.provider import answer
    from ecr_kubelet.wire import decode_json_object, encode_response, quick_request, read_request_fd

    deadline = Deadline.from_process_start(options.timeout)

    def expire(expired: Deadline) -> NoReturn:
        # Counted before _expire ends the process: with the cached token, or as unavailable.
        if expired.fallback is not None:
            observer.credentials, observer.stale = True, True
        record_metrics(options, observer, "kubelet", 0 if expired.fallback is not None else EXIT_UNAVAILABLE)
        _expire(expired)

    arm_backstop(deadline, expire)
    try:
        payload = decode_json_object(read_request_fd(sys.stdin.fileno(), deadline))
        request = quick_request(payload)
        if request is None:
            from ecr_kubelet.protocol import validate_request

            request = validate_request(payload)
        reply = answer(request, options, deadline, observer)
        observer.credentials = bool(reply.auth)
        return encode_response(request.api_version, reply)
    finally:
        disarm_backstop()


def _expire(deadline: Deadline) -> NoReturn:
    """The deadline passed during something that ignores it: the cached token if the run has one."""
    if deadline.fallback is not None:
        sys.stderr.write(f"{PROG}: warning: deadline reached; answering with the cached token, still valid\n")
        _write_stdout(deadline.fallback)
        os._exit(0)
    print_error(f"gave up after {deadline.timeout:g}s: the AWS credential source or API did not answer in "
                "time (--timeout)")
    os._exit(EXIT_UNAVAILABLE)


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def build_commit() -> str:
    try:
        from ecr_kubelet._build_info import BUILD_COMMIT  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "dev"
    return str(BUILD_COMMIT)
