"""How one kubelet request becomes an answer, top to bottom.

    stdin -> wire.read_request -> registry.parse_image -> mirrors.resolve_registry (hosts, --mirror)
          -> choose_identity (identity, roles) -> obtain_token (cache; on a miss, tokens via AWS)
          -> Answer with freshness' cacheDuration -> wire.encode_response -> stdout

Each step is a call into the module named for its concern; the values passed between them are in
models.py and the settings in one Options (options.py). The Docker helper (dockerhelper.py) and
`diagnose` take the same steps from `resolve_registry` on, with their own input and output.

A cache hit runs only our modules and what the interpreter has built in (test_hit_imports lists what
it must not load): botocore, pydantic, logging and re are imported on a miss, for an unusual request
or for a message, inside the step that needs them.
"""

from __future__ import annotations

import time

from ecr_kubelet import logs
from ecr_kubelet.cache import TokenCache, cache_key, prepare_cache_dir, unnamed_flight_key
from ecr_kubelet.deadline import Deadline
from ecr_kubelet.errors import ProviderError
from ecr_kubelet.identity import plan_identity
from ecr_kubelet.mirrors import resolve_registry
from ecr_kubelet.models import Answer
from ecr_kubelet.registry import parse_image
from ecr_kubelet.wire import encode_response, read_request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from ecr_kubelet.models import Identity, Registry, Request, Token
    from ecr_kubelet.observe import Observer
    from ecr_kubelet.options import Options

log = logs.get(__name__)

# How long the kubelet may remember "no credentials" for public ECR on a node outside the aws
# partition: the node's partition does not change, but a short time keeps a wrong region setting cheap.
PUBLIC_FALLBACK_CACHE = "1h0m0s"


class NoPublicCredentials(ProviderError):
    """Public ECR cannot be authenticated to from this partition; anonymous pulls still work."""

    shared_with_waiters = False  # found from the node's own settings, before any AWS call


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


def answer_request(request: Request, options: Options, deadline: Deadline,
                   observer: Observer | None = None) -> Answer:
    image = parse_image(request.image)
    registry = resolve_registry(image, options.mirrors)
    if registry is None:
        log.info("%s is neither an ECR registry nor a configured mirror: no credentials", image.auth_key)
        return Answer(auth={}, cache_duration=None)
    identity = choose_identity(registry, request.service_account_token, request.service_account_annotations,
                               options)
    log.info("%s: %s, as %s", image.auth_key, registry.describe(), identity.describe())

    def respond(token: Token, outcome: str) -> Answer:
        log.info("token %s; expires at %s", outcome, logs.when(token.expires_at))
        duration = options.freshness.cache_duration(token, time.time(), stale=outcome == "stale")
        return Answer(auth={image.auth_key: (token.username, token.password)}, cache_duration=duration)

    try:
        token, outcome = obtain_token(registry, identity, options, deadline,
                                      lambda cached: encode_response(request.api_version, respond(cached, "stale")),
                                      observer)
    except NoPublicCredentials as exc:
        log.warning("%s; the kubelet will pull anonymously", exc)
        return Answer(auth={}, cache_duration=PUBLIC_FALLBACK_CACHE)
    return respond(token, outcome)


def choose_identity(registry: Registry, sa_token: str | None, annotations: dict[str, str],
                    options: Options) -> Identity:
    """The identity that fetches this registry's token: the pod's service account, the node's
    credentials (after --role-arn), and a per-registry role on top (--registry-role)."""
    identity = plan_identity(sa_token, annotations, options)
    if identity.mode == "pod-identity":
        # --registry-role serves the node identity only: here, what a pod without an association gets.
        from ecr_kubelet import pod_identity

        fallback = choose_identity(registry, None, {}, options) if options.sa_without_role == "node" else None
        return pod_identity.with_fallback(identity, fallback)
    if options.registry_roles:
        from ecr_kubelet import roles

        identity = roles.apply(identity, registry, options.registry_roles)
    return identity


def obtain_token(registry: Registry, identity: Identity, options: Options, deadline: Deadline,
                 stale_answer: Callable[[Token], bytes],
                 observer: Observer | None = None) -> tuple[Token, str]:
    """The token every mode answers with (`_cached_or_fetched`), checked here, once for all of them, to be
    still usable: past or within the expiry margin, it is never handed out (freshness.check_answerable)."""
    token, outcome = _cached_or_fetched(registry, identity, options, deadline, stale_answer, observer)
    options.freshness.check_answerable(token, time.time())
    return token, outcome


def _cached_or_fetched(registry: Registry, identity: Identity, options: Options, deadline: Deadline,
                       stale_answer: Callable[[Token], bytes],
                       observer: Observer | None = None) -> tuple[Token, str]:
    """The token from the shared cache, or fetched once for every process that waits for it (every
    mode: the kubelet's, the Docker helper's, diagnose). `stale_answer` makes the answer of last
    resort from a still-valid cached token, should the deadline pass during a refresh; `observer`
    hears of the cache outcome and of every AWS call (metrics, diagnose)."""
    def fetch(who: Identity) -> Token:
        if observer is not None:
            observer.cache = "miss"
        with deadline.backstop():
            return fetch_token(registry, who, options, deadline, observer)

    directory = prepare_cache_dir(options.cache_dir) if options.cache_dir else None
    cache = TokenCache(directory, options.freshness)

    def cached_or_fetched(who: Identity, key: str) -> tuple[Token, str]:
        def keep_as_fallback(cached: Token) -> None:
            # Should something that cannot be timed out (a hung credential_process) outlive the
            # deadline, the run still answers with this still-valid token.
            deadline.fallback = stale_answer(cached)

        try:
            # Waiting for another run's fetch may take the whole deadline: never call AWS beside it.
            token, outcome = cache.get_or_fetch(key, lambda: fetch(who), lock_timeout=max(0.0, deadline.remaining()),
                                                on_usable=keep_as_fallback)
        finally:
            deadline.fallback = None
        if observer is not None:
            observer.cache = "hit" if outcome == "hit" else "miss"
            observer.stale = outcome == "stale"
        return token, outcome

    key = cache_key(registry, identity, options.endpoints)
    if key is not None:
        return cached_or_fetched(identity, key)
    if directory is None or identity.mode in ("service-account", "pod-identity"):
        # A pod's token that is not a JWT names no one: STS (or eks-auth) judges it, each pod on its own.
        return fetch(identity), "fetched (not cacheable)"

    def renamed() -> tuple[Identity, str | None]:
        who = choose_identity(registry, None, {}, options)
        return who, cache_key(registry, who, options.endpoints)

    def unnamed_flight() -> tuple[Token, str]:
        # The run before us may have named the identity (the metadata answers again) and cached a token.
        who, named_key = renamed()
        if named_key is not None:
            log.info("the node identity can be named now: %s", who.describe())
            return cached_or_fetched(who, named_key)
        token = fetch(identity)
        # The fetch resolved the node's credentials, so their source answers again: keep the token
        # for the runs queued behind us under the name it has now.
        who, named_key = renamed()
        if named_key is not None:
            cache.store(named_key, token)
        return token, "fetched (not cacheable)"

    # Which credentials sign cannot be said right now (say, instance metadata failing for a moment):
    # still one flight per registry, so a boot storm does not become one call per run.
    log.info("the node identity cannot be named now, so its token cannot be cached; runs for %s fetch one at a "
             "time", registry.host)
    return cache.fetch_alone(unnamed_flight_key(registry, identity, options.endpoints), unnamed_flight,
                             lock_timeout=max(0.0, deadline.remaining()))


def fetch_token(registry: Registry, identity: Identity, options: Options, deadline: Deadline,
                observer: Observer | None = None) -> Token:
    """A new token from AWS: botocore is loaded here, on a cache miss only."""
    logs.set_up()  # botocore logs through logging: its records are filtered like ours
    from ecr_kubelet import tokens
    from ecr_kubelet.awsapi import new_session

    session = new_session()  # one per miss: its loaders read botocore's data files once
    if observer is not None:
        observer.attach(session)
    if registry.kind == "public":
        partition = tokens.node_partition(session, options.environ)
        if partition not in (None, "aws"):
            raise NoPublicCredentials(
                f"public ECR authenticates only in the aws partition; this node is in {partition}"
            )

    def fetch_as(who: Identity) -> Token:
        if who.registry_role is not None:
            from ecr_kubelet import roles

            return roles.fetch_token(registry, who, session, deadline, options.max_attempts)
        # An access-denied answer (say, a node role without ecr-public permission) is a failure, not an
        # empty answer: the kubelet then logs our reason, caches nothing, and still pulls anonymously.
        return tokens.fetch_token(registry, who, session, deadline, options.max_attempts)

    if identity.mode == "pod-identity":
        from ecr_kubelet import pod_identity

        return pod_identity.fetch_token(registry, identity, session, deadline, options.max_attempts, fetch_as,
                                        observer, options.environ)
    return fetch_as(identity)
