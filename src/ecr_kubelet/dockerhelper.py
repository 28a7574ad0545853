"""Docker's credential-helper protocol: `docker-credential-ecr-login <get|list|store|erase|version>`.

The same host rules, identity, token cache and single flight as the kubelet mode, for docker, podman,
buildah, skopeo, crane and ko. The protocol (docker-credential-helpers) puts the verb in the only
argument, the input on stdin, and the answer *and any error message* on stdout; a non-zero exit with
the exact text `credentials not found in native keychain` makes clients go on anonymously, which is
what every host that is not an ECR registry gets, so no ECR token is ever sent to it.

Public ECR serves anonymous pulls, so a `get` for it that cannot be answered (no AWS credentials,
AWS denies, throttles or fails, the deadline passes) answers "not found" too, as Amazon's helper
does, and the client pulls anonymously; a private registry keeps the one-line error.

Configuration comes from the environment only (Docker passes no flags), read once by
`flags.parse_options(helper=True)`: the kubelet mode's defaults plus AWS_ECR_CACHE_DIR, AWS_ECR_DISABLE_CACHE,
ECR_KUBELET_TIMEOUT (default 20s here: clients wait for a helper without a timeout), ECR_KUBELET_VERBOSE
and ECR_KUBELET_REGISTRY_ROLES. Clients hide the helper's stderr, so what it says there also goes to a
log under the cache directory, `log/ecr-login.log` as with Amazon's helper (see `_log_file`). Standard
library only at module level: this runs on every pull.
"""

from __future__ import annotations

import os
import sys

from ecr_kubelet import jsoncodec, logs, redact
from ecr_kubelet.command import Command, record_metrics
from ecr_kubelet.deadline import Deadline
from ecr_kubelet.errors import EXIT_UNAVAILABLE, BadInputError, ProviderError
from ecr_kubelet.flags import HELPER_PROG, parse_options
from ecr_kubelet.observe import Observer

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any, NoReturn

    from ecr_kubelet.models import Identity, Registry, Token
    from ecr_kubelet.options import Options

log = logs.get("ecr_kubelet")

# docker-credential-helpers' own texts: clients compare them verbatim.
NOT_FOUND = "credentials not found in native keychain"
MISSING_SERVER_URL = "no credentials server URL"
NOT_IMPLEMENTED = "not implemented"  # what docker-credential-ecr-login answers to store and erase
USAGE = f"Usage: {HELPER_PROG} <store|get|erase|list|version>"
HELP = f"""{USAGE}

Docker credential helper for Amazon ECR (ecr-kubelet), a drop-in for Amazon's docker-credential-ecr-login:
  get      read a registry host on stdin, answer its ECR credentials as JSON (cached, one AWS call
           for every job that needs them at once); public ECR without credentials: "not found",
           so the client pulls anonymously
  list     the ECR registries this helper has served whose token is in the cache
  store, erase   not implemented (AWS_ECR_IGNORE_CREDS_STORAGE=true: accepted and ignored)
  version  print the version

Environment: AWS_ECR_CACHE_DIR, AWS_ECR_DISABLE_CACHE, AWS_ECR_ROLE_ARN, ECR_KUBELET_CACHE_DIR,
ECR_KUBELET_TIMEOUT (default 20s), ECR_KUBELET_VERBOSE, ECR_KUBELET_REGISTRY_ROLES, and the AWS SDK's.
Log: CACHE_DIR/log/ecr-login.log.
"""
MAX_INPUT_BYTES = 64 * 1024
EXIT_FAILED = 1  # the protocol's failure exit, also for "not found"
LOG_FILE = os.path.join("log", "ecr-login.log")  # under the cache directory, where Amazon's helper keeps it
LOG_MAX_BYTES = 1024 * 1024
LOG_BACKUPS = 2
MAX_LISTED = 100  # `list` answers at most this many registries
HOST_NOTE = ".host"  # beside a cache entry: the registry host the helper served from it


class CredentialsNotFound(Exception):
    """The server URL is not an ECR registry we can serve: the client should pull anonymously."""


def main(args: list[str]) -> int:
    """Run one helper verb: its exit code (the process then ends at once, command.end_process: registry
    clients wait for the helper's exit)."""
    redact.register_environment(os.environ)
    if args[:1] in (["-h"], ["--help"], ["help"]):
        _write(HELP.encode())
        return 0
    if len(args) != 1:
        return _fail(USAGE, EXIT_FAILED)
    verb = "version" if args[0] in ("-v", "--version") else args[0]  # Amazon's helper takes -v
    # The one error handler of every subcommand (command.py); the protocol wants the line on stdout.
    command = Command(HELPER_PROG, report=_report)
    observer = Observer()

    def body() -> int:
        options = _options()
        command.verbosity = options.verbosity
        if verb == "get":  # the only verb that looks anything up: counted once its answer is out
            command.before_exit = lambda code: record_metrics(options, observer, "docker-helper", code)
        return _run(verb, options, observer)

    return command.run(body)


def _report(line: str) -> None:
    _write(f"{HELPER_PROG}: {_in_helper_terms(line)}".encode() + b"\n")


def _run(verb: str, options: Options, observer: Observer) -> int:
    """One verb's answer on stdout; a failure raises, for Command to word."""
    run = _Get(options, observer)
    logs.configure(options.verbosity, prog=HELPER_PROG, extra_handler=lambda: _log_file(options))
    _warn_of_cache_dir(options)
    try:
        if verb == "get":
            deadline = Deadline.from_process_start(options.timeout, run.expire)  # stdin, the lock and AWS
            server_url = _read_stdin(deadline)
            if server_url is None:
                raise CredentialsNotFound  # no registry name is that long
            if not server_url:
                return _fail(MISSING_SERVER_URL, EXIT_FAILED)
            output = run.get(server_url, deadline)
        elif verb == "list":
            output = _list(options)
        elif verb in ("store", "erase"):
            _read_stdin(Deadline.from_process_start(options.timeout))  # a `store` carries a password: never echoed
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


class _Get:
    """One `get`: its deadline's last word (`expire`) depends on the registry it is for."""

    def __init__(self, options: Options, observer: Observer) -> None:
        self.options = options
        self.observer = observer
        self.public = False  # a public ECR registry: what cannot be answered is "not found"
        self.identity: Identity | None = None

    def get(self, server_url: str, deadline: Deadline) -> bytes:
        from ecr_kubelet.provider import NoPublicCredentials, obtain_token, resolve
        from ecr_kubelet.registry import parse_server_url

        options, observer = self.options, self.observer
        try:
            ref = parse_server_url(server_url)
        except BadInputError as exc:
            log.info("%r is not a registry host (%s): no credentials", server_url, exc)
            raise CredentialsNotFound from None
        # An ECR host with a port is still that registry, as for docker-credential-ecr-login.
        route = resolve(ref, options, deadline=deadline)
        if route is None:
            raise CredentialsNotFound
        registry, self.identity = route.registry, route.identity
        self.public = registry.kind == "public"

        def respond(token: Token) -> bytes:
            return encode_credentials(server_url, token.username, token.password)

        try:
            token, outcome = obtain_token(registry, route.identity, options, deadline, respond, observer)
        except NoPublicCredentials as exc:
            log.info("%s; the client will pull anonymously", exc)
            raise CredentialsNotFound from None
        except ProviderError as exc:
            if not self.public or isinstance(exc, BadInputError):  # our own configuration stays an error
                raise
            # Public ECR serves anonymous pulls: answer as Amazon's helper does, so the client pulls.
            log.info("public ECR: no token (%s); answering 'not found' so the client pulls anonymously",
                     _in_helper_terms(str(exc)))
            raise CredentialsNotFound from None
        log.info("token %s", outcome)
        if outcome == "fetched":
            _note_host(registry, route.identity, options)
        observer.credentials = True
        return respond(token)

    def expire(self, deadline: Deadline) -> NoReturn:
        """The deadline passed during something that ignores it: the cached token if there is one, else
        "not found" for public ECR, else the one-line failure; the process ends here."""
        options, observer = self.options, self.observer
        if deadline.fallback is not None:
            log.warning("deadline reached while refreshing; answering with the cached token, still valid")
            _write(deadline.fallback)
            observer.credentials, observer.stale = True, True
            record_metrics(options, observer, "docker-helper", 0)
            os._exit(0)
        if self.public:
            log.info("public ECR: no token within %gs; answering 'not found' so the client pulls anonymously",
                     options.timeout)
            observer.not_found = True
            code = _fail(NOT_FOUND, EXIT_FAILED)
        else:
            code = _fail(f"{HELPER_PROG}: gave up after {options.timeout:g}s: AWS did not answer in time",
                         EXIT_UNAVAILABLE)
        record_metrics(options, observer, "docker-helper", code)
        os._exit(code)


def encode_credentials(server_url: str, username: str, secret: str) -> bytes:
    """The `get` answer, shaped as docker-credential-helpers' Go encoder writes it."""
    body = {"ServerURL": server_url, "Username": username, "Secret": secret}
    return jsoncodec.dumps(body, compact=True).encode() + b"\n"


def _warn_of_cache_dir(options: Options) -> None:
    """AWS_ECR_CACHE_DIR empty or relative: used as Amazon's helper uses it (options.py), but said."""
    environ = options.environ
    value = environ.get("AWS_ECR_CACHE_DIR")
    if value is None or environ.get("ECR_KUBELET_CACHE_DIR") is not None or os.path.isabs(os.path.expanduser(value)):
        return
    where = options.cache_dir or "none: the cache is disabled"
    if value:
        log.warning("AWS_ECR_CACHE_DIR=%r is relative: using it from the working directory (%s)", value, where)
    else:
        log.warning("AWS_ECR_CACHE_DIR is empty: using ~/.ecr as docker-credential-ecr-login does (%s)", where)


def _log_file(options: Options) -> logging.Handler | None:
    """The log under the cache directory (`log/ecr-login.log`, where Amazon's helper keeps its log), for
    the logging handlers; nothing is created until a record is written to it.

    Its directory follows trust.py's rule like the cache's; the file is ours, a regular file, 0600, and
    rotated at LOG_MAX_BYTES. Records pass the same redaction as stderr's (logs.RedactingFilter). Where it
    cannot be kept safely, that is said once on stderr and the run goes on without it."""
    if options.cache_dir is None:
        return None
    import logging.handlers
    import stat

    from ecr_kubelet.trust import Untrusted, trusted_directory

    path = os.path.join(options.cache_dir, LOG_FILE)

    class PrivateLog(logging.handlers.RotatingFileHandler):
        failed = False

        def _open(self) -> Any:
            # baseFilename is only used once its directory passed the rule (resolved path, so renames
            # on rotation stay inside it).
            directory = trusted_directory(os.path.dirname(path), create=True)
            self.baseFilename = os.path.join(directory, os.path.basename(path))
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
            fd = os.open(self.baseFilename, flags, 0o600)
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                    raise OSError(f"{self.baseFilename} is not a regular file of ours")
                if info.st_mode & 0o077:
                    os.fchmod(fd, 0o600)  # Amazon's helper makes it 0644
                return open(fd, "a", encoding="utf-8", errors="backslashreplace")
            except BaseException:
                os.close(fd)
                raise

        def emit(self, record: logging.LogRecord) -> None:
            if not self.failed:
                super().emit(record)

        def handleError(self, record: logging.LogRecord) -> None:
            error = sys.exc_info()[1]
            if isinstance(error, Untrusted | OSError) and not self.failed:
                self.failed = True  # said once; never a traceback
                sys.stderr.write(f"{HELPER_PROG}: warning: not keeping a log in {path}: "
                                 f"{redact.scrub(str(error))}\n")
            elif not self.failed:
                super().handleError(record)

    handler = PrivateLog(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    return handler


def _note_host(registry: Registry, identity: Identity, options: Options) -> None:
    """Beside the cache entry just written, the registry host it serves: what `list` answers."""
    from ecr_kubelet import private_files
    from ecr_kubelet.cache import cache_key
    from ecr_kubelet.trust import Untrusted, trusted_directory

    key = cache_key(registry, identity, options.endpoints)
    if key is None or options.cache_dir is None:
        return
    try:  # the directory the run just used (it warned already if it could not)
        directory = trusted_directory(options.cache_dir)
    except (Untrusted, OSError):
        return
    if not os.path.exists(os.path.join(directory, key + ".json")):
        return  # not cached (the cache is off): nothing `list` could answer from
    if os.path.exists(os.path.join(directory, key + HOST_NOTE)):
        return  # noted at an earlier fetch: a key names one registry host
    try:
        private_files.write_file(directory, key + HOST_NOTE, registry.host.encode())
    except OSError as exc:
        log.debug("could not note %s for `list`: %s", registry.host, exc.strerror)


def _list(options: Options) -> bytes:
    """`{"https://HOST": "AWS"}` for each registry this helper served whose entry is still in the cache, as
    Amazon's helper lists the entries of its cache.json. Only host names are read (never a token), at most
    MAX_LISTED, each checked to be an ECR host again; Amazon's also fetches tokens first, ours calls no one."""
    import re

    from ecr_kubelet import private_files
    from ecr_kubelet.cache import prepare_cache_dir
    from ecr_kubelet.mirrors import resolve_registry
    from ecr_kubelet.registry import parse_server_url

    directory = prepare_cache_dir(options.cache_dir) if options.cache_dir else None
    listed: dict[str, str] = {}
    if directory is None:
        return b"{}\n"
    with os.scandir(directory) as entries:
        notes = sorted(e.name for e in entries if re.fullmatch(r"[0-9a-f]{40}\.host", e.name))
    for name in notes:
        key = name[: -len(HOST_NOTE)]
        if len(listed) >= MAX_LISTED or not os.path.exists(os.path.join(directory, key + ".json")):
            continue
        raw = private_files.read_usable(os.path.join(directory, name), 256, private=True)
        try:
            host = (raw or b"").decode("ascii")
            registry = resolve_registry(parse_server_url(host), {})
        except (UnicodeDecodeError, BadInputError):
            continue
        if registry is not None and registry.host == host:
            listed[f"https://{host}"] = "AWS"
    return jsoncodec.dumps(listed, compact=True).encode() + b"\n"


def _read_stdin(deadline: Deadline) -> str | None:
    """The whole of stdin, read within the deadline as the kubelet mode reads its request, trimmed
    (clients send the server URL with or without a newline); None if it is larger than any server URL."""
    from ecr_kubelet.wire import read_request_fd

    raw = read_request_fd(sys.stdin.fileno(), deadline)
    if len(raw) > MAX_INPUT_BYTES:
        return None
    return raw.decode("utf-8", "replace").strip()


def _fail(message: str, code: int) -> int:
    """The protocol's error channel is stdout: clients show that text (and match the not-found one)."""
    _write(redact.scrub(message).replace("\n", " ").encode() + b"\n")
    return code


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
