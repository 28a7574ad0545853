"""Go duration strings: what we emit must parse with Go's rules; what Go rejects, we reject."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecr_kubelet.durations import DurationError, format_go_duration, parse_go_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (-5, "0s"), (0.9, "0s"), (1, "1s"), (59, "59s"), (60, "1m0s"), (90, "1m30s"),
     (3600, "1h0m0s"), (21600, "6h0m0s"), (43199, "11h59m59s"), (100 * 3600 + 1, "100h0m1s")],
)
def test_format_matches_go_duration_string(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("0s", 0), ("6h0m0s", 21600), ("21600s", 21600), ("1.5h", 5400), ("12h", 43200),
     ("300ms", 0.3), ("1h30m", 5400), ("-1s", -1), ("+2m", 120), ("1us", 1e-6), ("1\u00b5s", 1e-6),
     (".5s", 0.5), ("1.s", 1)],
)
def test_parse_accepts_go_syntax(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "1d", "6 h", "h", "1h 2m", "s", "-", "1.2.3s", "1H", "9999999999h"])
def test_parse_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        parse_go_duration(text)


@given(st.integers(min_value=0, max_value=10**7))
def test_format_round_trips(seconds: int) -> None:
    assert parse_go_duration(format_go_duration(seconds)) == seconds
