"""The kubelet mode: one CredentialProviderRequest on stdin, one response on stdout, or one line on
stderr (command.py). The request is read here; the pipeline (provider.py) answers it.
"""

from __future__ import annotations

import os
import sys
import time

from ecr_kubelet import __version__, logs, redact
from ecr_kubelet.command import Command, StdoutError, record_metrics, verbosity_in, write_stdout
from ecr_kubelet.deadline import Deadline
from ecr_kubelet.errors import EXIT_UNAVAILABLE
from ecr_kubelet.flags import PROG, parse_options
from ecr_kubelet.models import Answer
from ecr_kubelet.observe import Observer
from ecr_kubelet.provider import NoPublicCredentials, obtain_token, resolve
from ecr_kubelet.registry import parse_image
from ecr_kubelet.wire import decode_json_object, encode_response, quick_request, read_request_fd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from ecr_kubelet.models import Request, Token
    from ecr_kubelet.options import Options

log = logs.get("ecr_kubelet")

STDIN_FD = 0  # the request is read from the descriptor, never through sys.stdin (None when stdin is closed)
# How long the kubelet may remember "no credentials" for public ECR on a node outside the aws
# partition: the node's partition does not change, but a short time keeps a wrong region setting cheap.
PUBLIC_FALLBACK_CACHE = "1h0m0s"


def main(argv: list[str]) -> int:
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
        write_stdout(handle(STDIN_FD, options, observer, expire_action(options, observer, command)))
        return 0

    return command.run(body)


def handle(stdin_fd: int, options: Options, observer: Observer,
           expire: Callable[[Deadline], NoReturn] | None = None) -> bytes:
    """Read the kubelet's request from `stdin_fd` and return the response to write on stdout.

    `expire` ends the run should AWS work that ignores the deadline (a hung credential_process) still
    be running at the deadline (Deadline.backstop)."""
    deadline = Deadline.from_process_start(options.timeout, expire)
    request = read_request(stdin_fd, deadline)
    answer = answer_request(request, options, deadline, observer)
    observer.credentials = bool(answer.auth)
    return encode_response(request.api_version, answer)


def read_request(fd: int, deadline: Deadline) -> Request:
    """The kubelet's request from `fd`, read within the deadline, decoded and validated: the usual exact
    shape without pydantic (wire.quick_request), anything else by the full validation (protocol.py)."""
    payload = decode_json_object(read_request_fd(fd, deadline))
    request = quick_request(payload)
    if request is None:
        from ecr_kubelet.protocol import validate_request

        request = validate_request(payload)
    return request


def answer_request(request: Request, options: Options, deadline: Deadline,
                   observer: Observer | None = None) -> Answer:
    """The pipeline (provider.py) for the request's image; the token as the kubelet's `auth` entry and
    a cacheDuration that ends at its refresh point."""
    image = parse_image(request.image)
    route = resolve(image, options, request.service_account_token, request.service_account_annotations, deadline)
    if route is None:
        return Answer(auth={}, cache_duration=None)

    def respond(token: Token, outcome: str) -> Answer:
        log.info("token %s; expires at %s", outcome, logs.when(token.expires_at))
        duration = options.freshness.cache_duration(token, time.time(), stale=outcome == "stale")
        return Answer(auth={image.auth_key: (token.username, token.password)}, cache_duration=duration)

    try:
        token, outcome = obtain_token(route.registry, route.identity, options, deadline,
                                      lambda cached: encode_response(request.api_version, respond(cached, "stale")),
                                      observer)
    except NoPublicCredentials as exc:
        log.warning("%s; the kubelet will pull anonymously", exc)
        return Answer(auth={}, cache_duration=PUBLIC_FALLBACK_CACHE)
    return respond(token, outcome)


def expire_action(options: Options, observer: Observer, command: Command) -> Callable[[Deadline], NoReturn]:
    """What ends a kubelet run whose deadline passed during something that ignores it (Deadline.backstop):
    the cached token if the run has one, else the one-line failure; counted in the metrics after it."""
    def expire(deadline: Deadline) -> NoReturn:
        if deadline.fallback is not None:
            observer.credentials, observer.stale = True, True
            logs.release_held()
            try:  # noqa: SIM105 (contextlib is not loaded on a hit)
                sys.stderr.write(f"{PROG}: warning: deadline reached; answering with the cached token, still valid\n")
            except (OSError, ValueError, AttributeError):
                pass  # stderr gone: the answer matters more
            try:
                write_stdout(deadline.fallback)
            except StdoutError as exc:
                os._exit(command.fail(str(exc), exc.exit_code))  # counted by before_exit, as every failure
            command.before_exit = None
            record_metrics(options, observer, "kubelet", 0)  # after the answer
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
