"""Refresh point, expiry margin and cacheDuration (freshness.py)."""

from __future__ import annotations

import pytest

from ecr_kubelet.freshness import Freshness, TooCloseToExpiry
from ecr_kubelet.models import Token

NOW = 1_800_000_000.0


def token(expires_in: float | None) -> Token:
    return Token("AWS", "password-123456", None if expires_in is None else NOW + expires_in, NOW - 60)


@pytest.mark.parametrize("expires_in", [-3600, -1, 0, 1, 299, 300])
def test_a_token_past_or_within_the_margin_is_not_answerable(expires_in: float) -> None:
    with pytest.raises(TooCloseToExpiry) as raised:
        Freshness(0.5, 300).check_answerable(token(expires_in), NOW)
    assert raised.value.exit_code == 1 and "--expiry-margin 5m0s" in str(raised.value)


@pytest.mark.parametrize("expires_in", [301, 43200, None])
def test_a_token_beyond_the_margin_or_without_an_expiry_is_answerable(expires_in: float | None) -> None:
    freshness = Freshness(0.5, 300)
    freshness.check_answerable(token(expires_in), NOW)
    if expires_in is None:
        assert freshness.cache_duration(token(None), NOW, stale=False) == "0s"
