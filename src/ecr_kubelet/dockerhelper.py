"""Docker's credential-helper protocol: `docker-credential-ecr-login <get|list|store|erase|version>`.

The same host rules, identity, token cache and single flight as the kubelet mode, for docker, podman,
buildah, skopeo, crane and ko. The protocol (docker-credential-helpers) puts the verb in the only
argument, the input on stdin, and the answer *and any error message* on stdout; a non-zero exit with
the exact text `credentials not found in native keychain` makes clients go on anonymously, which is
what every host that is not an ECR registry gets, so no ECR token is ever sent to it.

Configuration comes from the environment only (Docker passes no flags), read once by
`cli.parse_options(helper=True)`: the kubelet mode's defaults plus AWS_ECR_CACHE_DIR, AWS_ECR_DISABLE_CACHE,
ECR_KUBELET_TIMEOUT, ECR_KUBELET_VERBOSE and
ECR_KUBELET_REGISTRY_ROLES. Standard library only at module level: this runs on every pull.
"""

from __future__ import annotations

import os
import sys

from ecr_kubelet import jsoncodec, logs, redact
from ecr_kubelet.cli import HELPER_PROG, log, parse_options, record_metrics
from ecr_kubelet.deadline import Deadline
from ecr_kubelet.errors import EXIT_INTERNAL, EXIT_UNAVAILABLE, ProviderError
from ecr_kubelet.observe import Observer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from ecr_kubelet.models import Token
    from ecr_kubelet.options import Options

# docker-credential-helpers' own texts: clients compare them verbatim.
NOT_FOUND = "credentials not found in native keychain"
MISSING_SERVER_URL = "no credentials server URL"
NOT_IMPLEMENTED = "not implemented"  # what docker-credential-ecr-login answers to store and erase
USAGE = f"Usage: {HELPER_PROG} <store|get|erase|list|version>"
MAX_INPUT_BYTES = 64 * 1024
EXIT_FAILED = 1  # the protocol's failure exit, also for "not found"


class CredentialsNotFound(Exception):
    """The server URL is not an ECR registry we can serve: the client should pull anonymously."""


def main(args: list[str]) -> int:
    """Run one helper verb; returns the exit code."""
    redact.register_environment(os.environ)
    if len(args) != 1:
        return _fail(USAGE, EXIT_FAILED)
    verb = "version" if args[0] in ("-v", "--version") else args[0]  # Amazon's helper takes -v
    try:
        options = _options()
    except ProviderError as exc:
        return _fail(f"{HELPER_PROG}: {exc}", exc.exit_code)
    except Exception as exc:  # a bug: say what, not where
        return _fail(f"{HELPER_PROG}: internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL)
    observer = Observer()
    code = _run(verb, options, observer)
    if verb == "get":  # the only verb that looks anything up
        record_metrics(options, observer, "docker-helper", code)
    return code


def _run(verb: str, options: Options, observer: Observer) -> int:
    verbosity = options.verbosity
    try:
        logs.configure(verbosity)
        if verb == "get":
            server_url = _read_stdin()
            if server_url is None:
                raise CredentialsNotFound  # no registry name is that long
            if not server_url:
                return _fail(MISSING_SERVER_URL, EXIT_FAILED)
            output = _get(server_url, options, observer)
        elif verb == "list":
            output = b"{}\n"  # nothing is stored: every token is minted on demand (and cached) by `get`
        elif verb in ("store", "erase"):
            _read_stdin()  # a `store` carries a password: consumed, never echoed
            if options.environ.get("AWS_ECR_IGNORE_CREDS_STORAGE") != "true":
                return _fail(NOT_IMPLEMENTED, EXIT_FAILED)
            log.info("%s ignored (AWS_ECR_IGNORE_CREDS_STORAGE=true): ECR tokens are minted by `get`", verb)
            output = b""
        elif verb == "version":
            from ecr_kubelet import __version__

            output = f"{HELPER_PROG} (ecr-kubelet) {__version__}\n".encode()
        else:
            return _fail(f"{HELPER_PROG}: unknown action: {verb}", EXIT_FAILED)
    except CredentialsNotFound:
        observer.not_found = True
        return _fail(NOT_FOUND, EXIT_FAILED)
    except ProviderError as exc:
        return _fail(f"{HELPER_PROG}: {_in_helper_terms(str(exc))}", exc.exit_code)
    except Exception as exc:  # a bug: say what, not where, unless asked
        if verbosity:
            log.exception("internal error")
        return _fail(f"{HELPER_PROG}: internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL)
    _write(output)
    return 0


def _in_helper_terms(text: str) -> str:
    """Messages name the kubelet mode's flags; the helper is configured by their variables."""
    from ecr_kubelet.options import FLAG_VARIABLES

    for flag, variable in FLAG_VARIABLES.items():
        text = text.replace(flag, variable)
    return text


def _options() -> Options:
    from ecr_kubelet.errors import BadInputError

    try:
        options = parse_options([], os.environ, helper=True)
    except BadInputError as exc:
        # The messages name the kubelet mode's flags; the helper is configured by their variables.
        raise BadInputError(f"environment: {_in_helper_terms(str(exc))}") from None
    assert options is not None
    return options


def _get(server_url: str, options: Options, observer: Observer) -> bytes:
    from ecr_kubelet.errors import BadInputError
    from ecr_kubelet.mirrors import resolve_registry
    from ecr_kubelet.provider import NoPublicCredentials, choose_identity, obtain_token
    from ecr_kubelet.registry import parse_server_url

    try:
        ref = parse_server_url(server_url)
    except BadInputError as exc:
        log.info("%r is not a registry host (%s): no credentials", server_url, exc)
        raise CredentialsNotFound from None
    # An ECR host with a port is still that registry, as for docker-credential-ecr-login.
    registry = resolve_registry(ref, options.mirrors)
    if registry is None:
        log.info("%s is not an ECR registry: no credentials", ref.auth_key)
        raise CredentialsNotFound
    identity = choose_identity(registry, None, {}, options)
    log.info("%s: %s, as %s", ref.auth_key, registry.describe(), identity.describe())

    def respond(token: Token) -> bytes:
        return encode_credentials(server_url, token.username, token.password)

    def expire(deadline: Deadline) -> NoReturn:
        if deadline.fallback is not None:
            log.warning("deadline reached while refreshing; answering with the cached token, still valid")
            _write(deadline.fallback)
            observer.credentials, observer.stale = True, True
            record_metrics(options, observer, "docker-helper", 0)
            os._exit(0)
        code = _fail(f"{HELPER_PROG}: gave up after {options.timeout:g}s: AWS did not answer in time",
                     EXIT_UNAVAILABLE)
        record_metrics(options, observer, "docker-helper", code)
        os._exit(code)

    deadline = Deadline.from_process_start(options.timeout, expire)
    try:
        token, outcome = obtain_token(registry, identity, options, deadline, respond, observer)
    except NoPublicCredentials as exc:
        log.info("%s; the client will pull anonymously", exc)
        raise CredentialsNotFound from None
    log.info("token %s", outcome)
    observer.credentials = True
    return respond(token)


def encode_credentials(server_url: str, username: str, secret: str) -> bytes:
    """The `get` answer, shaped as docker-credential-helpers' Go encoder writes it."""
    body = {"ServerURL": server_url, "Username": username, "Secret": secret}
    return jsoncodec.dumps(body, compact=True).encode() + b"\n"


def _read_stdin() -> str | None:
    """The whole of stdin, trimmed (clients send the server URL with or without a newline); None if
    it is larger than any server URL (the rest is drained, so the client never blocks writing it)."""
    raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    if len(raw) > MAX_INPUT_BYTES:
        while sys.stdin.buffer.read(MAX_INPUT_BYTES):
            pass
        return None
    return raw.decode("utf-8", "replace").strip()


def _fail(message: str, code: int) -> int:
    """The protocol's error channel is stdout: clients show that text (and match the not-found one)."""
    _write(redact.scrub(message).replace("\n", " ").encode() + b"\n")
    return code


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
