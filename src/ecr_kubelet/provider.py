"""The one request pipeline every front end runs (the kubelet mode, the Docker helper, diagnose):

    image ref -> resolve: mirrors.resolve_registry (ECR hosts, --mirror) -> choose_identity (identity,
                 roles, pod_identity) -> Route(registry, identity), or None: not ours, no credentials
              -> obtain_token: the cache (one flight per key); on a miss fetch_token via AWS
                 (credentials, tokens, eks_auth), checked against the expiry margin

Each front end reads its own input (kubelet.py: the request on stdin; dockerhelper.py: a server URL;
diagnose.py: an image argument), turns it into an image ref (registry.py), and words the token its
own way; what happens in between is only here. The values passed are in models.py, the settings in
one Options (options.py); an Observer hears of the cache outcome and of every AWS call.

A cache hit runs only our modules and what the interpreter has built in (test_hit_imports lists what
it must not load): botocore, pydantic, logging and re are imported on a miss, for an unusual request
or for a message, inside the step that needs them.
"""

from __future__ import annotations

import time

from ecr_kubelet import logs
from ecr_kubelet.cache import TokenCache, cache_key, prepare_cache_dir, unnamed_flight_key
from ecr_kubelet.errors import ProviderError
from ecr_kubelet.identity import plan_identity
from ecr_kubelet.mirrors import resolve_registry
from ecr_kubelet.models import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ecr_kubelet.deadline import Deadline
    from ecr_kubelet.models import Identity, ImageRef, Registry, Token
    from ecr_kubelet.observe import Observer
    from ecr_kubelet.options import Options

log = logs.get(__name__)


class NoPublicCredentials(ProviderError):
    """Public ECR cannot be authenticated to from this partition; anonymous pulls still work."""

    shared_with_waiters = False  # found from the node's own settings, before any AWS call


class Route(Value):
    """Where an image's credentials come from: its ECR registry and the identity that fetches them."""

    __slots__ = ("identity", "registry")
    registry: Registry
    identity: Identity

    def __init__(self, registry: Registry, identity: Identity) -> None:
        self._init(registry=registry, identity=identity)


def resolve(ref: ImageRef, options: Options, sa_token: str | None = None,
            annotations: dict[str, str] | None = None, deadline: Deadline | None = None) -> Route | None:
    """The registry and identity for an image's registry part, or None when it is neither an ECR registry
    nor a configured mirror (it gets no credentials: an ECR token never reaches a foreign host)."""
    registry = resolve_registry(ref, options.mirrors)
    if registry is None:
        log.info("%s is neither an ECR registry nor a configured mirror: no credentials", ref.auth_key)
        return None
    identity = choose_identity(registry, sa_token, annotations or {}, options, deadline)
    log.info("%s: %s, as %s", ref.auth_key, registry.describe(), identity.describe())
    return Route(registry, identity)


def choose_identity(registry: Registry, sa_token: str | None, annotations: dict[str, str],
                    options: Options, deadline: Deadline | None = None) -> Identity:
    """The identity that fetches this registry's token: the pod's service account, the node's
    credentials (after --role-arn), and a per-registry role on top (--registry-role)."""
    identity = plan_identity(sa_token, annotations, options, deadline)
    if identity.mode == "pod-identity":
        # --registry-role serves the node identity only: here, what a pod without an association gets.
        from ecr_kubelet import pod_identity

        fallback = choose_identity(registry, None, {}, options, deadline) if options.sa_without_role == "node" else None
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
        who = choose_identity(registry, None, {}, options, deadline)
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
            return tokens.fetch_as_registry_role(registry, who, session, deadline, options.max_attempts)
        # An access-denied answer (say, a node role without ecr-public permission) is a failure, not an
        # empty answer: the kubelet then logs our reason, caches nothing, and still pulls anonymously.
        return tokens.fetch_token(registry, who, session, deadline, options.max_attempts)

    if identity.mode == "pod-identity":
        from ecr_kubelet import eks_auth

        return eks_auth.fetch_token(registry, identity, session, deadline, options.max_attempts, fetch_as,
                                    observer, options.environ)
    return fetch_as(identity)
