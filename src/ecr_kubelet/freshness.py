"""When a cached token is refreshed, when it may no longer be handed out, and what the kubelet is told.

Three settings decide it: the refresh point (`--refresh-fraction` of the token's life: the cache
fetches a new token after it), the expiry margin (`--expiry-margin`: never hand out a token closer
to its expiry than this) and, following from both, the `cacheDuration` we return, which ends at the
refresh point, so the kubelet asks again when we would refresh anyway.
"""

from __future__ import annotations

from ecr_kubelet.durations import format_go_duration
from ecr_kubelet.errors import ProviderError
from ecr_kubelet.logs import when

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ecr_kubelet.models import Token


class TooCloseToExpiry(ProviderError):
    """A token (say, one capped by assumed-role credentials that were already expired) whose expiry is
    past or within the expiry margin: never handed out. An unexpected answer from AWS: exit 1."""


class Freshness:
    __slots__ = ("expiry_margin", "refresh_fraction")

    def __init__(self, refresh_fraction: float, expiry_margin: float) -> None:
        self.refresh_fraction = refresh_fraction  # share of a token's life after which we fetch a new one
        self.expiry_margin = expiry_margin  # seconds before expiry at which a token is no longer handed out

    def __repr__(self) -> str:
        return f"Freshness(refresh_fraction={self.refresh_fraction!r}, expiry_margin={self.expiry_margin!r})"

    def refresh_at(self, token: Token) -> float:
        if token.expires_at is None:
            return token.fetched_at
        return token.fetched_at + (token.expires_at - token.fetched_at) * self.refresh_fraction

    def usable_until(self, token: Token) -> float:
        return -1.0 if token.expires_at is None else token.expires_at - self.expiry_margin

    def is_fresh(self, token: Token, now: float) -> bool:
        return now < min(self.refresh_at(token), self.usable_until(token))

    def is_usable(self, token: Token, now: float) -> bool:
        return now < self.usable_until(token)

    def check_answerable(self, token: Token, now: float) -> None:
        """The final check of every answer, whatever its source (cache hit, stale fallback, fetch): a token
        is handed out only before expiry minus the margin; one without a known expiry is handed out with a
        cacheDuration of 0s (never cached, by us or the kubelet)."""
        if token.expires_at is not None and not self.is_usable(token, now):
            raise TooCloseToExpiry(
                f"the token expires at {when(token.expires_at)}, less than --expiry-margin "
                f"{format_go_duration(self.expiry_margin)} from now: not handed out"
            )

    def cache_duration(self, token: Token, now: float, *, stale: bool) -> str:
        """How long the kubelet may reuse the token: until our refresh point, never past expiry - margin;
        a stale token (served because its refresh failed) until expiry - margin."""
        until = self.usable_until(token) if stale else min(self.refresh_at(token), self.usable_until(token))
        return format_go_duration(until - now)
