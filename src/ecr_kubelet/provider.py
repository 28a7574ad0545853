"""Answer one CredentialProviderRequest: image -> registry -> identity -> (cached) token -> Answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ecr_kubelet.cache import Freshness, TokenCache, key_digest, prepare_cache_dir
from ecr_kubelet.deadline import Deadline
from ecr_kubelet.durations import format_go_duration
from ecr_kubelet.errors import ProviderError
from ecr_kubelet.identity import Identity, plan_identity
from ecr_kubelet.options import Options
from ecr_kubelet.registry import Registry, classify_host, configured_endpoint, parse_image
from ecr_kubelet.tokens import Token
from ecr_kubelet.wire import Answer, Request, encode_response

if TYPE_CHECKING:
    from ecr_kubelet.observe import Observer

log = logging.getLogger(__name__)

# How long the kubelet may remember "no credentials" for public ECR on a node outside the aws
# partition: the node's partition does not change, but a short time keeps a wrong region setting cheap.
PUBLIC_FALLBACK_CACHE = "1h0m0s"


class NoPublicCredentials(ProviderError):
    """Public ECR cannot be authenticated to from this partition; anonymous pulls still work."""


def answer(request: Request, options: Options, deadline: Deadline, observer: Observer | None = None) -> Answer:
    image = parse_image(request.image)
    registry = resolve_registry(image.normalized_host, image.port, options.mirrors)
    if registry is None:
        log.info("%s is neither an ECR registry nor a configured mirror: no credentials", image.auth_key)
        return Answer(auth={}, cache_duration=None)
    identity = plan_identity(request.service_account_token, request.service_account_annotations, options)
    if options.registry_roles:
        from ecr_kubelet import roles

        identity = roles.apply(identity, registry, options.registry_roles)
    log.info("%s: %s, as %s", image.auth_key, registry.describe(), identity.describe())
    freshness = Freshness(options.refresh_fraction, options.expiry_margin)

    def respond(token: Token, outcome: str) -> Answer:
        log.info("token %s; expires at %s", outcome, _when(token.expires_at))
        duration = cache_duration(token, time.time(), freshness, stale=outcome == "stale")
        return Answer(auth={image.auth_key: (token.username, token.password)}, cache_duration=duration)

    try:
        token, outcome = obtain_token(registry, identity, options, freshness, deadline,
                                      lambda cached: encode_response(request.api_version, respond(cached, "stale")),
                                      observer)
    except NoPublicCredentials as exc:
        log.warning("%s; the kubelet will pull anonymously", exc)
        return Answer(auth={}, cache_duration=PUBLIC_FALLBACK_CACHE)
    return respond(token, outcome)


def resolve_registry(host: str, port: int | None, mirrors: dict[str, str]) -> Registry | None:
    """The ECR registry whose credentials serve this host: itself, or the registry it mirrors.

    A mirror matches host and port exactly as configured, as the kubelet matches `auth` keys: one
    configured without a port serves only images without one.
    """
    target = mirrors.get(host if port is None else f"{host}:{port}")
    return classify_host(target if target else host)


def cache_key(registry: Registry, identity: Identity) -> str | None:
    fingerprint = identity.fingerprint()
    if fingerprint is None:
        return None
    return key_digest({
        "service": registry.service, "partition": registry.partition, "region": registry.region,
        "account": registry.account or "", "variant": registry.variant, "identity": fingerprint,
        "endpoint": configured_endpoint(registry.service) or "",
    })


def cache_duration(token: Token, now: float, freshness: Freshness, *, stale: bool) -> str:
    """How long the kubelet may reuse the token: until our refresh point, never past expiry - margin."""
    until = freshness.usable_until(token) if stale else min(
        freshness.refresh_at(token), freshness.usable_until(token)
    )
    return format_go_duration(until - now)


def obtain_token(registry: Registry, identity: Identity, options: Options, freshness: Freshness,
                 deadline: Deadline, stale_answer: Callable[[Token], bytes],
                 observer: Observer | None = None) -> tuple[Token, str]:
    """The token from the shared cache, or fetched once for every process that waits for it (both
    modes: the kubelet's and the Docker helper's). `stale_answer` makes the answer of last resort
    from a still-valid cached token, should the deadline pass during a refresh; `observer` hears of
    the cache outcome and of every AWS call (metrics, diagnose)."""
    def fetch() -> Token:
        if observer is not None:
            observer.cache = "miss"
        return _fetch(registry, identity, options, deadline, observer)

    key = cache_key(registry, identity)
    if key is None:
        return fetch(), "fetched (not cacheable)"
    directory = prepare_cache_dir(options.cache_dir) if options.cache_dir else None
    cache = TokenCache(directory, freshness)

    def keep_as_fallback(cached: Token) -> None:
        # Should something that cannot be timed out (a hung credential_process) outlive the
        # deadline, the run still answers with this still-valid token.
        deadline.fallback = stale_answer(cached)

    try:
        token, outcome = cache.get_or_fetch(key, fetch, lock_timeout=max(0.0, deadline.remaining() / 2),
                                            on_usable=keep_as_fallback)
    finally:
        deadline.fallback = None
    if observer is not None:
        observer.cache = "hit" if outcome == "hit" else "miss"
        observer.stale = outcome == "stale"
    return token, outcome


def _fetch(registry: Registry, identity: Identity, options: Options, deadline: Deadline,
           observer: Observer | None = None) -> Token:
    from ecr_kubelet.awsapi import new_session
    from ecr_kubelet.tokens import fetch_token, node_partition

    session = new_session()  # one per miss: its loaders read botocore's data files once
    if observer is not None:
        observer.attach(session)
    if registry.kind == "public":
        partition = node_partition(session)
        if partition not in (None, "aws"):
            raise NoPublicCredentials(
                f"public ECR authenticates only in the aws partition; this node is in {partition}"
            )
    if identity.registry_role is not None:
        from ecr_kubelet import roles

        return roles.fetch_token(registry, identity, session, deadline, options.max_attempts)
    # An access-denied answer (say, a node role without ecr-public permission) is a failure, not an
    # empty answer: the kubelet then logs our reason, caches nothing, and still pulls anonymously.
    return fetch_token(registry, identity, session, deadline, options.max_attempts)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "an unknown time"
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    except (OverflowError, ValueError, OSError):
        return f"{epoch:.6g} (epoch seconds)"
