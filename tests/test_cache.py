"""Unit tests of the token cache (src/ecr_kubelet/cache.py), in process.

The tests that need a whole pull (a refused or unwritable cache directory must still answer) run the
plugin like the kubelet does and are marked e2e.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import resource
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ecr_kubelet import cache as cache_mod
from ecr_kubelet import private_files
from ecr_kubelet.cache import (
    ENTRY_VERSION,
    TokenCache,
    key_digest,
    prepare_cache_dir,
)
from ecr_kubelet.errors import AuthError, BadInputError, ProviderError, UnavailableError
from ecr_kubelet.freshness import Freshness
from ecr_kubelet.models import Token
from helpers import RunProvider, StubClient, blocked_waiters, flocks_held, in_thread, make_request

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
KEY = key_digest({"test": "key"})
NOBODY = 65534
MARGIN = 300.0
FRESH = Freshness(refresh_fraction=0.5, expiry_margin=MARGIN)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another uid")


def make_token(lifetime: float = 43200.0, age: float = 0.0, password: str = "pw-1") -> Token:
    """A token fetched `age` seconds ago that lives `lifetime` seconds from its fetch."""
    fetched = time.time() - age
    return Token(username="AWS", password=password, expires_at=fetched + lifetime, fetched_at=fetched)


def entry_body(token: Token, key: str = KEY, **override: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": ENTRY_VERSION,
        "key": key,
        "username": token.username,
        "password": token.password,
        "expires_at": token.expires_at,
        "fetched_at": token.fetched_at,
    }
    body.update(override)
    return body


def write_entry(directory: Path, raw: bytes, key: str = KEY, mode: int = 0o600) -> Path:
    path = directory / f"{key}.json"
    path.write_bytes(raw)
    path.chmod(mode)
    return path


class Fetcher:
    """A fetch() callable that counts its calls and returns (or raises) what it is told."""

    def __init__(self, result: Token | Exception) -> None:
        self.result = result
        self.calls = 0

    def __call__(self) -> Token:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture
def warnings_log(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], str]]:
    caplog.set_level(logging.WARNING, logger="ecr_kubelet.cache")

    def text() -> str:
        return "\n".join(r.getMessage() for r in caplog.records if r.name == "ecr_kubelet.cache")

    yield text


# ---- Freshness ------------------------------------------------------------------------------------


def test_refresh_point_is_the_configured_fraction_of_the_lifetime() -> None:
    token = Token("AWS", "pw", expires_at=1000.0 + 43200, fetched_at=1000.0)
    assert Freshness(0.5, MARGIN).refresh_at(token) == 1000.0 + 21600
    assert Freshness(0.25, MARGIN).refresh_at(token) == 1000.0 + 10800
    assert Freshness(1.0, MARGIN).refresh_at(token) == 1000.0 + 43200


def test_usable_until_is_expiry_minus_margin() -> None:
    token = Token("AWS", "pw", expires_at=5000.0, fetched_at=1000.0)
    assert Freshness(0.5, 300).usable_until(token) == 4700.0
    assert Freshness(0.5, 0).usable_until(token) == 5000.0


def test_freshness_boundaries_for_a_long_lived_token() -> None:
    token = Token("AWS", "pw", expires_at=1000.0 + 43200, fetched_at=1000.0)
    refresh = 1000.0 + 21600
    assert FRESH.is_fresh(token, refresh - 0.001)
    assert not FRESH.is_fresh(token, refresh)
    # past the refresh point the token is still usable (servable during an outage) until expiry - margin
    assert FRESH.is_usable(token, refresh + 1)
    assert FRESH.is_usable(token, 1000.0 + 43200 - MARGIN - 0.001)
    assert not FRESH.is_usable(token, 1000.0 + 43200 - MARGIN)
    assert not FRESH.is_usable(token, 1000.0 + 43200 + 1)


def test_margin_wins_over_the_refresh_point_for_a_short_lived_token() -> None:
    # 400 s lifetime: refresh point at +200 s, but expiry - 5 min is at +100 s.
    token = Token("AWS", "pw", expires_at=1400.0, fetched_at=1000.0)
    assert FRESH.is_fresh(token, 1099.9)
    assert not FRESH.is_fresh(token, 1100.0)
    assert not FRESH.is_usable(token, 1100.0)


def test_token_shorter_than_the_margin_is_never_fresh_or_usable() -> None:
    token = Token("AWS", "pw", expires_at=1200.0, fetched_at=1000.0)
    assert not FRESH.is_fresh(token, 1000.0)
    assert not FRESH.is_usable(token, 1000.0)


def test_token_without_expiry_is_never_fresh_or_usable() -> None:
    token = Token("AWS", "pw", expires_at=None, fetched_at=time.time())
    assert FRESH.usable_until(token) < 0
    assert not FRESH.is_fresh(token, token.fetched_at)
    assert not FRESH.is_usable(token, token.fetched_at)


# ---- key_digest -----------------------------------------------------------------------------------


def test_key_digest_is_order_independent_secret_free_and_distinct() -> None:
    parts = {"service": "ecr", "region": "us-east-1", "identity": "static-key=abc123"}
    reordered = dict(reversed(list(parts.items())))
    digest = key_digest(parts)
    assert digest == key_digest(reordered)
    assert len(digest) == 40 and all(c in "0123456789abcdef" for c in digest)
    assert "abc123" not in digest and "us-east-1" not in digest
    assert digest != key_digest({**parts, "identity": "static-key=abc124"})
    assert digest != key_digest({**parts, "region": "us-west-2"})


# ---- TokenCache: store and lookup -----------------------------------------------------------------


def test_store_then_lookup_from_another_process_view(cache_dir: Path) -> None:
    token = make_token()
    TokenCache(cache_dir, FRESH).store(KEY, token)
    # a new TokenCache has an empty memory level: this reads the file
    assert TokenCache(cache_dir, FRESH).lookup(KEY) == token
    assert TokenCache(cache_dir, FRESH).lookup(key_digest({"other": "key"})) is None


def test_store_writes_one_private_file_and_no_temporaries(cache_dir: Path) -> None:
    token = make_token(password="secret-password")
    TokenCache(cache_dir, FRESH).store(KEY, token)
    assert sorted(p.name for p in cache_dir.iterdir()) == [f"{KEY}.json"]
    path = cache_dir / f"{KEY}.json"
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    assert json.loads(path.read_bytes()) == entry_body(token)


def test_store_replaces_an_existing_entry(cache_dir: Path) -> None:
    cache = TokenCache(cache_dir, FRESH)
    cache.store(KEY, make_token(password="old"))
    cache.store(KEY, make_token(password="new"))
    assert json.loads((cache_dir / f"{KEY}.json").read_bytes())["password"] == "new"
    fresh_view = TokenCache(cache_dir, FRESH).lookup(KEY)
    assert fresh_view is not None and fresh_view.password == "new"


@pytest.mark.parametrize(
    "token",
    [
        Token("AWS", "pw", expires_at=None, fetched_at=time.time()),
        make_token(lifetime=MARGIN - 1),
        make_token(lifetime=3600, age=7200),
    ],
    ids=["no-expiry", "shorter-than-margin", "expired"],
)
def test_unusable_tokens_are_not_stored(cache_dir: Path, token: Token) -> None:
    cache = TokenCache(cache_dir, FRESH)
    cache.store(KEY, token)
    assert list(cache_dir.iterdir()) == []
    assert cache.lookup(KEY) is None


def test_expired_entry_on_disk_is_never_returned(cache_dir: Path) -> None:
    token = make_token(lifetime=3600, age=3600 - MARGIN + 1)  # 1 s past expiry - margin
    write_entry(cache_dir, json.dumps(entry_body(token)).encode())
    assert TokenCache(cache_dir, FRESH).lookup(KEY) is None
    # the same entry is fine for a caller with a smaller margin
    assert TokenCache(cache_dir, Freshness(0.5, 60)).lookup(KEY) == token


def test_without_a_directory_nothing_is_kept() -> None:
    cache = TokenCache(None, FRESH)
    cache.store(KEY, make_token())
    assert cache.lookup(KEY) is None


# ---- TokenCache: entries that must be ignored -----------------------------------------------------

_VALID = make_token(lifetime=43200)  # an ECR token's longest life, and long enough for the test session
_VALID_RAW = json.dumps(entry_body(_VALID)).encode()

BAD_ENTRIES: dict[str, bytes] = {
    "garbage": b"\x00\xffnot json at all",
    "empty": b"",
    "truncated": _VALID_RAW[: len(_VALID_RAW) // 2],
    "not-an-object": b'["AWS", "pw"]',
    "unknown-version": json.dumps(entry_body(_VALID, version=ENTRY_VERSION + 1)).encode(),
    "no-version": json.dumps({k: v for k, v in entry_body(_VALID).items() if k != "version"}).encode(),
    "other-key": json.dumps(entry_body(_VALID, key=key_digest({"other": "key"}))).encode(),
    "missing-password": json.dumps({k: v for k, v in entry_body(_VALID).items() if k != "password"}).encode(),
    "empty-password": json.dumps(entry_body(_VALID, password="")).encode(),
    "password-not-string": json.dumps(entry_body(_VALID, password=12345)).encode(),
    "null-expiry": json.dumps(entry_body(_VALID, expires_at=None)).encode(),
    "string-expiry": json.dumps(entry_body(_VALID, expires_at=str(_VALID.expires_at))).encode(),
    "infinite-expiry": json.dumps(entry_body(_VALID, expires_at=float("inf"))).encode(),
    "nan-expiry": json.dumps(entry_body(_VALID, expires_at=float("nan"))).encode(),
    "huge-int-expiry": json.dumps(entry_body(_VALID, expires_at=10**400)).encode(),
    "oversized": json.dumps(entry_body(_VALID, padding="x" * (64 * 1024))).encode(),
    "absurd-finite-expiry": json.dumps(entry_body(_VALID, expires_at=1e308)).encode(),
    "absurd-fetch-time": json.dumps(entry_body(_VALID, fetched_at=-1e308)).encode(),
    "longer-than-12h": json.dumps(entry_body(_VALID, expires_at=_VALID.fetched_at + 43200 + 3600)).encode(),
    "expiry-before-fetch": json.dumps(entry_body(_VALID, expires_at=_VALID.fetched_at - 1)).encode(),
    "fetched-in-the-future": json.dumps(entry_body(_VALID, fetched_at=_VALID.fetched_at + 3600,
                                                   expires_at=_VALID.fetched_at + 7200)).encode(),
    "fetched-over-12h-ago": json.dumps(entry_body(_VALID, fetched_at=_VALID.fetched_at - 50000,
                                                  expires_at=_VALID.fetched_at - 50000 + 43200)).encode(),
    "boolean-version": json.dumps(entry_body(_VALID, version=True)).encode(),
    "extra-field": json.dumps(entry_body(_VALID, proxy="https://evil.example")).encode(),
    "username-with-colon": json.dumps(entry_body(_VALID, username="AWS:x")).encode(),
    "password-with-newline": json.dumps(entry_body(_VALID, password="pw\nX-Header: 1")).encode(),
    "huge-password": json.dumps(entry_body(_VALID, password="p" * 20000)).encode(),
    "deeply-nested": b'{"version": 1, "x": ' + b"[" * 100_000,
}


@pytest.mark.parametrize("raw", list(BAD_ENTRIES.values()), ids=list(BAD_ENTRIES))
def test_bad_entry_is_ignored_with_a_warning_and_replaced(
    cache_dir: Path, raw: bytes, warnings_log: Callable[[], str]
) -> None:
    path = write_entry(cache_dir, raw)
    assert TokenCache(cache_dir, FRESH).lookup(KEY) is None
    assert "ignoring corrupt or incompatible cache entry" in warnings_log()
    assert KEY in warnings_log()

    fresh = make_token(password="replacement")
    fetch = Fetcher(fresh)
    token, outcome = TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=1)
    assert (token, outcome, fetch.calls) == (fresh, "fetched", 1)
    assert json.loads(path.read_bytes()) == entry_body(fresh)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_valid_entry_control_for_the_bad_entry_cases(cache_dir: Path) -> None:
    """The same bytes, unmodified, are accepted: the cases above fail for their one defect."""
    write_entry(cache_dir, _VALID_RAW)
    assert TokenCache(cache_dir, FRESH).lookup(KEY) == _VALID


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_entry_readable_by_others_is_ignored(cache_dir: Path, mode: int, warnings_log: Callable[[], str]) -> None:
    write_entry(cache_dir, _VALID_RAW, mode=mode)
    assert TokenCache(cache_dir, FRESH).lookup(KEY) is None
    assert "not private to this user" in warnings_log()


@needs_root
def test_entry_owned_by_another_user_is_ignored(cache_dir: Path, warnings_log: Callable[[], str]) -> None:
    path = write_entry(cache_dir, _VALID_RAW)
    os.chown(path, NOBODY, NOBODY)
    assert TokenCache(cache_dir, FRESH).lookup(KEY) is None
    assert "not private to this user" in warnings_log()
    # and a fetch replaces it with one of ours
    fetch = Fetcher(make_token(password="ours"))
    TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=1)
    assert path.stat().st_uid == os.geteuid()
    assert json.loads(path.read_bytes())["password"] == "ours"


def test_symlinked_entry_is_not_followed(cache_dir: Path, tmp_path: Path, warnings_log: Callable[[], str]) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_bytes(_VALID_RAW)
    target.chmod(0o600)
    (cache_dir / f"{KEY}.json").symlink_to(target)
    assert TokenCache(cache_dir, FRESH).lookup(KEY) is None
    assert "ignoring unreadable cache entry" in warnings_log()
    TokenCache(cache_dir, FRESH).get_or_fetch(KEY, Fetcher(make_token(password="ours")), lock_timeout=1)
    # the link itself was replaced; its target was not written through
    assert not (cache_dir / f"{KEY}.json").is_symlink()
    assert target.read_bytes() == _VALID_RAW


def test_directory_at_the_entry_path_is_ignored_not_fatal(cache_dir: Path, warnings_log: Callable[[], str]) -> None:
    (cache_dir / f"{KEY}.json").mkdir()
    assert TokenCache(cache_dir, FRESH).lookup(KEY) is None
    assert "not a regular file" in warnings_log()
    fresh = make_token()
    token, outcome = TokenCache(cache_dir, FRESH).get_or_fetch(KEY, Fetcher(fresh), lock_timeout=1)
    assert (token, outcome) == (fresh, "fetched")  # the write fails (warned), the pull does not


def test_fifo_at_the_entry_path_does_not_block(cache_dir: Path, warnings_log: Callable[[], str]) -> None:
    os.mkfifo(cache_dir / f"{KEY}.json", 0o600)
    result: list[Token | None] = []
    worker = threading.Thread(target=lambda: result.append(TokenCache(cache_dir, FRESH).lookup(KEY)), daemon=True)
    worker.start()
    worker.join(timeout=5)
    if worker.is_alive():  # unblock the reader so the daemon thread can finish
        with open(cache_dir / f"{KEY}.json", "wb"):
            pass
        pytest.fail("lookup blocked opening a FIFO planted at the entry path")
    assert result == [None]
    assert "not a regular file" in warnings_log()


# ---- TokenCache.get_or_fetch ----------------------------------------------------------------------


def test_cold_fetch_then_hit_without_fetching(cache_dir: Path) -> None:
    token = make_token()
    fetch = Fetcher(token)
    assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=1) == (token, "fetched")
    second = Fetcher(make_token(password="never"))
    assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, second, lock_timeout=1) == (token, "hit")
    assert (fetch.calls, second.calls) == (1, 0)


def test_past_the_refresh_point_fetches_a_new_token(cache_dir: Path) -> None:
    old = make_token(lifetime=43200, age=21601)
    TokenCache(cache_dir, FRESH).store(KEY, old)
    new = make_token(password="new")
    fetch = Fetcher(new)
    assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=1) == (new, "fetched")
    assert fetch.calls == 1
    assert TokenCache(cache_dir, FRESH).lookup(KEY) == new


def test_refresh_failing_unavailable_serves_the_still_valid_token(
    cache_dir: Path, warnings_log: Callable[[], str]
) -> None:
    old = make_token(lifetime=43200, age=30000)
    TokenCache(cache_dir, FRESH).store(KEY, old)
    fetch = Fetcher(UnavailableError("ecr:GetAuthorizationToken failed: ThrottlingException"))
    assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=1) == (old, "stale")
    assert fetch.calls == 1
    assert "serving the cached token" in warnings_log()
    assert TokenCache(cache_dir, FRESH).lookup(KEY) == old  # the entry is kept


def test_refresh_failing_unavailable_with_an_unusable_token_raises(cache_dir: Path) -> None:
    old = make_token(lifetime=3600, age=3600 - MARGIN + 1)
    write_entry(cache_dir, json.dumps(entry_body(old)).encode())
    fetch = Fetcher(UnavailableError("outage"))
    with pytest.raises(UnavailableError):
        TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=1)
    assert fetch.calls == 1


def test_refresh_failing_with_access_denied_is_not_masked_by_the_cache(cache_dir: Path) -> None:
    TokenCache(cache_dir, FRESH).store(KEY, make_token(lifetime=43200, age=30000))
    with pytest.raises(AuthError):
        TokenCache(cache_dir, FRESH).get_or_fetch(KEY, Fetcher(AuthError("denied")), lock_timeout=1)


def _hold_lock(directory: Path, key: str = KEY) -> int:
    fd = os.open(directory / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@pytest.fixture
def lock_waits(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set when an invocation starts waiting for a key's lock (it has read the key's state by then)."""
    waiting = threading.Event()
    wait = cache_mod._wait

    def signalling_wait(fd: int, end: float, *, shared: bool) -> bool:
        waiting.set()
        return wait(fd, end, shared=shared)

    monkeypatch.setattr(cache_mod, "_wait", signalling_wait)
    return waiting


def test_waiter_uses_the_token_stored_by_the_lock_holder(cache_dir: Path, lock_waits: threading.Event) -> None:
    """Single flight: a process that waited for the lock re-reads the file and does not fetch."""
    holder = _hold_lock(cache_dir)
    stored = make_token(password="from-the-holder")
    fetch = Fetcher(make_token(password="should-not-be-fetched"))
    thread, outcome = in_thread(lambda: TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=60))
    assert lock_waits.wait(30)
    TokenCache(cache_dir, FRESH).store(KEY, stored)  # the holder's fetch succeeds
    os.close(holder)
    thread.join(30)
    assert outcome == [(stored, "hit")]
    assert fetch.calls == 0


def test_a_waiter_whose_wait_runs_out_fails_and_never_fetches_itself(
        cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """However long the holder's fetch takes (throttling retried until its deadline), a waiter never
    calls AWS beside it: at the end of its own wait (private_files.lock, given its lock_timeout) it
    fails, unavailable."""
    timeouts: list[float] = []

    def wait_runs_out(fd: int, timeout: float, **_kwargs: Any) -> bool:
        timeouts.append(timeout)
        return False

    monkeypatch.setattr(private_files, "lock", wait_runs_out)
    holder = _hold_lock(cache_dir)
    fetch = Fetcher(make_token())
    try:
        with pytest.raises(UnavailableError):
            TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=7.5)
    finally:
        os.close(holder)
    assert fetch.calls == 0
    assert len(timeouts) == 1 and 7.0 < timeouts[0] <= 7.5  # it waited (what was left of) its own timeout


def test_a_waiter_whose_wait_runs_out_serves_a_still_valid_token(
        cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(private_files, "lock", lambda _fd, _timeout, **_kwargs: False)  # the wait runs out at once
    stale = make_token(lifetime=3600, age=2000)
    TokenCache(cache_dir, FRESH).store(KEY, stale)
    holder = _hold_lock(cache_dir)
    fetch = Fetcher(make_token())
    try:
        assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=5) == (stale, "stale")
    finally:
        os.close(holder)
    assert fetch.calls == 0


def test_a_waiter_takes_the_lock_the_moment_the_holder_lets_go(cache_dir: Path) -> None:
    """The kernel wait (the main thread): no fetch beside the holder, the holder's token once it is done."""
    holder = _hold_lock(cache_dir)
    lock = cache_dir / f"{KEY}.lock"
    stored = make_token(password="from-the-holder")

    def release_once_blocked() -> None:
        while not blocked_waiters(lock):  # an event the kernel reports, not a guessed delay
            time.sleep(0.001)
        TokenCache(cache_dir, FRESH).store(KEY, stored)
        os.close(holder)

    releaser = threading.Thread(target=release_once_blocked)
    releaser.start()
    fetch = Fetcher(make_token(password="should-not-be-fetched"))
    try:
        assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=60) == (stored, "hit")
    finally:
        releaser.join(30)
    assert fetch.calls == 0
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) == signal.SIG_DFL


def test_the_runs_queued_behind_a_fetch_answer_together_not_one_after_another(cache_dir: Path) -> None:
    """At node boot dozens of runs queue behind one fetch: they wait shared, so each answers from the
    cache while the others still hold their places, instead of taking the lock in turn."""
    holder = _hold_lock(cache_dir)
    lock = cache_dir / f"{KEY}.lock"
    stored = make_token(password="from-the-holder")

    def fetch_then_stay_queued() -> None:
        while not blocked_waiters(lock):  # an event the kernel reports, not a guessed delay
            time.sleep(0.001)
        TokenCache(cache_dir, FRESH).store(KEY, stored)
        fcntl.flock(holder, fcntl.LOCK_SH)  # now another queued run, still reading the token

    releaser = threading.Thread(target=fetch_then_stay_queued)
    releaser.start()
    fetch = Fetcher(make_token(password="should-not-be-fetched"))
    try:
        assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=10) == (stored, "hit")
    finally:
        releaser.join(30)
        os.close(holder)
    assert fetch.calls == 0


def test_a_queued_run_fetches_itself_when_the_holder_left_neither_token_nor_error(cache_dir: Path) -> None:
    """A holder killed mid-fetch (the kubelet's 60 s kill) leaves no entry and no failure: one of the runs
    behind it fetches, under the lock, once."""
    holder = _hold_lock(cache_dir)
    lock = cache_dir / f"{KEY}.lock"

    def die_once_blocked() -> None:
        while not blocked_waiters(lock):
            time.sleep(0.001)
        os.close(holder)

    releaser = threading.Thread(target=die_once_blocked)
    releaser.start()
    token = make_token(password="fetched-by-the-waiter")
    kinds: list[list[str]] = []

    def fetch() -> Token:
        kinds.append(flocks_held(lock))  # the lock this run holds while it calls AWS
        return token

    try:
        assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=20) == (token, "fetched")
    finally:
        releaser.join(30)
    assert kinds == [["WRITE"]]  # once, and exclusive: no other queued run can fetch beside it
    assert TokenCache(cache_dir, FRESH).lookup(KEY) == token


def _priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def _fetch_noting_priority(seen: list[int]) -> Callable[[], Token]:
    """A fetch that notes the run's CPU priority while it runs."""
    def fetch() -> Token:
        seen.append(_priority())
        return make_token()

    return fetch


@pytest.mark.skipif(os.geteuid() != 0, reason="raising a priority takes root")
def test_the_run_that_fetches_for_the_others_runs_ahead_of_them_until_it_is_done(cache_dir: Path) -> None:
    before = _priority()
    seen: list[int] = []
    TokenCache(cache_dir, FRESH).get_or_fetch(KEY, _fetch_noting_priority(seen), lock_timeout=5)
    TokenCache(cache_dir, FRESH).fetch_alone(FLIGHT, lambda: seen.append(_priority()), lock_timeout=5)
    with pytest.raises(UnavailableError):
        TokenCache(cache_dir, FRESH).get_or_fetch("other" + KEY[5:], Fetcher(UnavailableError("throttled")),
                                                  lock_timeout=5)
    assert seen == [max(-20, before - cache_mod.RUN_AHEAD)] * 2
    assert _priority() == before  # given back, whatever the fetch's outcome


@pytest.mark.skipif(os.geteuid() != 0, reason="raising a priority takes root")
def test_a_fetch_within_a_fetch_keeps_the_first_raise(cache_dir: Path) -> None:
    """An unnamed flight whose identity can be named after all fetches through the cache inside its own
    flight: one raise, not two, and given back once."""
    before = _priority()
    seen: list[int] = []
    cache = TokenCache(cache_dir, FRESH)

    def named_after_all() -> None:
        seen.append(_priority())
        cache.get_or_fetch(KEY, _fetch_noting_priority(seen), lock_timeout=5)
        seen.append(_priority())

    cache.fetch_alone(FLIGHT, named_after_all, lock_timeout=5)
    assert seen == [max(-20, before - cache_mod.RUN_AHEAD)] * 3
    assert _priority() == before


def test_a_run_without_a_lock_does_not_run_ahead(cache_dir: Path) -> None:
    """No cache directory (or no lock): no one waits for this run, so it keeps its place."""
    before = _priority()
    seen: list[int] = []
    TokenCache(None, FRESH).get_or_fetch(KEY, _fetch_noting_priority(seen), lock_timeout=5)
    assert seen == [before]


def test_a_run_not_permitted_to_run_ahead_fetches_all_the_same(
        cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def not_permitted(*_args: int) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "setpriority", not_permitted)
    token = make_token()
    assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, Fetcher(token), lock_timeout=5) == (token, "fetched")


def test_lock_files_are_private(cache_dir: Path) -> None:
    TokenCache(cache_dir, FRESH).get_or_fetch(KEY, Fetcher(make_token()), lock_timeout=1)
    lock = cache_dir / f"{KEY}.lock"
    assert lock.is_file()
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


# ---- an unwritable cache never fails a pull (in process) ------------------------------------------


def test_failing_writes_are_warned_and_the_token_still_returned(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch, warnings_log: Callable[[], str]
) -> None:
    def read_only(*_args: Any, **_kwargs: Any) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(private_files, "_create_temp", read_only)
    token = make_token()
    fetch = Fetcher(token)
    assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=1) == (token, "fetched")
    assert "could not write the token cache" in warnings_log()
    assert not (cache_dir / f"{KEY}.json").exists()


def test_write_failing_midway_leaves_no_temporary_file(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch, warnings_log: Callable[[], str]
) -> None:
    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    TokenCache(cache_dir, FRESH).store(KEY, make_token())
    assert "could not write the token cache" in warnings_log()
    assert [p.name for p in cache_dir.iterdir()] == []


def test_unopenable_lock_is_warned_and_the_fetch_goes_on(cache_dir: Path, warnings_log: Callable[[], str]) -> None:
    (cache_dir / f"{KEY}.lock").mkdir()  # os.open(O_RDWR) fails with EISDIR
    token = make_token()
    fetch = Fetcher(token)
    assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=1) == (token, "fetched")
    assert "cannot open the cache lock" in warnings_log()
    assert TokenCache(cache_dir, FRESH).lookup(KEY) == token


def test_file_system_without_flock_is_warned_and_the_fetch_goes_on(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch, warnings_log: Callable[[], str]
) -> None:
    def no_locks(_fd: int, _op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    token = make_token()
    fetch = Fetcher(token)
    assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=1) == (token, "fetched")
    assert fetch.calls == 1
    assert "cannot lock the token cache" in warnings_log()
    assert TokenCache(cache_dir, FRESH).lookup(KEY) == token


# ---- prepare_cache_dir / default_cache_dir --------------------------------------------------------


def test_prepare_creates_a_private_directory_with_parents(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b" / "cache"
    assert prepare_cache_dir(directory) == str(directory)
    info = directory.lstat()
    assert stat.S_ISDIR(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.geteuid()
    assert prepare_cache_dir(directory) == str(directory)  # idempotent


def test_prepare_accepts_an_existing_private_directory(cache_dir: Path) -> None:
    assert prepare_cache_dir(cache_dir) == str(cache_dir)


def test_prepare_follows_a_symlink_only_root_or_we_can_change(
    cache_dir: Path, tmp_path: Path, warnings_log: Callable[[], str]
) -> None:
    link = tmp_path / "link"
    link.symlink_to(cache_dir)
    assert prepare_cache_dir(link) == str(cache_dir)  # the resolved path, used from then on
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "link").symlink_to(cache_dir)
    assert prepare_cache_dir(shared / "link") is None
    assert f"{shared} is writable by group or others" in warnings_log()


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o720, 0o1777], ids=oct)
def test_prepare_refuses_group_or_world_writable(cache_dir: Path, mode: int, warnings_log: Callable[[], str]) -> None:
    cache_dir.chmod(mode)
    assert prepare_cache_dir(cache_dir) is None
    assert "writable by group or others" in warnings_log()


@needs_root
def test_prepare_refuses_a_directory_owned_by_another_user(cache_dir: Path, warnings_log: Callable[[], str]) -> None:
    os.chown(cache_dir, NOBODY, NOBODY)
    assert prepare_cache_dir(cache_dir) is None
    assert f"owned by uid {NOBODY}" in warnings_log()


def test_prepare_refuses_a_regular_file(tmp_path: Path, warnings_log: Callable[[], str]) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    assert prepare_cache_dir(path) is None
    assert "token cache disabled" in warnings_log()


def test_prepare_refuses_a_path_through_a_file(tmp_path: Path, warnings_log: Callable[[], str]) -> None:
    (tmp_path / "file").write_text("x")
    assert prepare_cache_dir(tmp_path / "file" / "cache") is None
    assert f"{tmp_path / 'file'} is not a directory" in warnings_log()


# ---- a refused or unwritable directory still answers the pull (subprocess) ------------------------


def _answered(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    response = json.loads(proc.stdout)
    password: str = response["auth"][REGISTRY]["password"]
    assert password.startswith("stubpw-")
    return password


def _with_cache_dir(env: dict[str, str], directory: Path) -> dict[str, str]:
    return {**env, "ECR_KUBELET_CACHE_DIR": str(directory)}


def _refused_symlink(tmp_path: Path) -> Path:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "link").symlink_to(real)  # others could point it elsewhere
    return shared / "link"


def _refused_world_writable(tmp_path: Path) -> Path:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o777)
    return directory


def _refused_other_owner(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown to another uid")
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, NOBODY, NOBODY)
    return directory


def _refused_uncreatable(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "cache"


REFUSALS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "symlink": (_refused_symlink, "writable by group or others"),
    "world-writable": (_refused_world_writable, "writable by group or others"),
    "other-owner": (_refused_other_owner, f"owned by uid {NOBODY}"),
    "uncreatable": (_refused_uncreatable, "is not a directory"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_cache_dir_warns_and_the_pull_still_answers(
    case: str, tmp_path: Path, run_provider: RunProvider, provider_env: dict[str, str], stub: StubClient
) -> None:
    make_dir, warning = REFUSALS[case]
    directory = make_dir(tmp_path)
    env = _with_cache_dir(provider_env, directory)
    first = run_provider(make_request(IMAGE), env=env)
    second = run_provider(make_request(IMAGE), env=env)
    assert "token cache disabled" in first.stderr and warning in first.stderr
    # uncached: both runs called ECR and got different passwords
    assert _answered(first) != _answered(second)
    assert len(stub.calls("ecr", "GetAuthorizationToken")) == 2
    if directory.is_dir():
        assert [p.name for p in directory.iterdir()] == []  # nothing written into a refused directory


@pytest.mark.e2e
def test_unwritable_cache_dir_warns_and_the_pull_still_answers(
    tmp_path: Path, provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient
) -> None:
    """Writes fail for real: the child may not create non-empty files (RLIMIT_FSIZE = 0 -> EFBIG).

    Root ignores permission bits, so a file-size limit is how a root process gets a write failure.
    """
    if os.environ.get("ECR_KUBELET_TEST_BINARY"):
        pytest.skip("the binary may unpack its bundle on a first run, which the file-size limit forbids")
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)

    def no_file_writes() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    env = {**_with_cache_dir(provider_env, directory), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        provider_cmd,
        input=json.dumps(make_request(IMAGE)).encode(),
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
        preexec_fn=no_file_writes,
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert json.loads(proc.stdout)["auth"][REGISTRY]["password"].startswith("stubpw-")
    assert "could not write the token cache" in stderr
    assert len(stub.calls("ecr", "GetAuthorizationToken")) == 1
    assert not list(directory.glob("*.json"))  # no entry and no leftover temporary file


# ---- hold-off after a failed fetch, stale temp files, directory mode, warnings ----------------------


def _queue_behind_a_failing_holder(cache_dir: Path, lock_waits: threading.Event, error: ProviderError,
                                   queued: Fetcher, cached: Token | None = None) -> list[Any]:
    """A run queues while "another invocation" holds the key's lock; that fetch fails with `error`."""
    if cached is not None:
        TokenCache(cache_dir, FRESH).store(KEY, cached)
    holder = _hold_lock(cache_dir)
    thread, outcome = in_thread(lambda: TokenCache(cache_dir, FRESH).get_or_fetch(KEY, queued, lock_timeout=60))
    assert lock_waits.wait(30)
    TokenCache(cache_dir, FRESH)._record_attempt(KEY, 0, error)  # the holder's fetch fails while we wait
    os.close(holder)
    thread.join(30)
    assert not thread.is_alive()
    return outcome


@pytest.mark.parametrize("error", [
    UnavailableError("ecr:GetAuthorizationToken failed: ThrottlingException: Rate exceeded [17 attempts]"),
    AuthError("ecr:GetAuthorizationToken failed: AccessDeniedException: not authorized"),
    BadInputError("sts:AssumeRoleWithWebIdentity: invalid parameter: token"),
    ProviderError("ecr:GetAuthorizationToken failed: SomethingElse: odd"),
], ids=["throttled", "denied", "bad-input", "other"])
def test_runs_queued_behind_a_failed_fetch_fail_at_once_with_its_error(
        cache_dir: Path, lock_waits: threading.Event, error: ProviderError) -> None:
    queued = Fetcher(make_token())
    outcome = _queue_behind_a_failing_holder(cache_dir, lock_waits, error, queued)
    assert queued.calls == 0
    assert type(outcome[0]) is type(error) and str(outcome[0]) == str(error)


def test_a_queued_run_with_a_valid_token_serves_it_when_the_refresh_was_throttled(
        cache_dir: Path, lock_waits: threading.Event) -> None:
    stale = make_token(lifetime=3600, age=2000)
    queued = Fetcher(make_token())
    outcome = _queue_behind_a_failing_holder(cache_dir, lock_waits, UnavailableError("throttled"), queued, stale)
    assert outcome == [(stale, "stale")] and queued.calls == 0


def test_every_failure_of_the_holder_is_recorded_for_its_waiters(cache_dir: Path) -> None:
    for error in (AuthError("denied"), UnavailableError("throttled"), BadInputError("bad")):
        with pytest.raises(type(error)):
            TokenCache(cache_dir, FRESH).get_or_fetch(KEY, Fetcher(error), lock_timeout=1)
        _count, failure = TokenCache(cache_dir, FRESH)._read_attempts(KEY)
        assert type(failure) is type(error) and str(failure) == str(error)


def test_a_bug_in_the_holder_is_shared_without_its_message(cache_dir: Path) -> None:
    with pytest.raises(KeyError):
        TokenCache(cache_dir, FRESH).get_or_fetch(KEY, Fetcher(KeyError("secret-ish detail")), lock_timeout=1)
    _count, failure = TokenCache(cache_dir, FRESH)._read_attempts(KEY)
    assert type(failure) is ProviderError and "KeyError" in str(failure) and "secret" not in str(failure)


def test_an_error_found_locally_is_not_shared(cache_dir: Path) -> None:
    class Local(ProviderError):
        shared_with_waiters = False

    with pytest.raises(Local):
        TokenCache(cache_dir, FRESH).get_or_fetch(KEY, Fetcher(Local("no public ECR here")), lock_timeout=1)
    assert TokenCache(cache_dir, FRESH)._read_attempts(KEY) == (0, None)


def test_a_recorded_failure_never_holds_a_registered_secret(cache_dir: Path) -> None:
    from ecr_kubelet import redact

    redact.register("hunter2-session-token-value")
    with pytest.raises(AuthError):
        TokenCache(cache_dir, FRESH).get_or_fetch(
            KEY, Fetcher(AuthError("denied for hunter2-session-token-value")), lock_timeout=1)
    assert b"hunter2" not in (cache_dir / f"{KEY}.attempts").read_bytes()


def test_only_the_run_that_called_aws_records_a_failure(cache_dir: Path, lock_waits: threading.Event) -> None:
    outcome = _queue_behind_a_failing_holder(cache_dir, lock_waits, UnavailableError("throttled"),
                                             Fetcher(make_token()))
    assert isinstance(outcome[0], UnavailableError)
    # the queued run failed fast and recorded nothing: the count is still the one real failure
    assert (cache_dir / f"{KEY}.attempts").read_bytes() == b"1 failed 4 throttled"
    # so a run that starts now tries AWS again, and its success is recorded
    good = Fetcher(make_token())
    assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, good, lock_timeout=1)[1] == "fetched"
    assert good.calls == 1 and (cache_dir / f"{KEY}.attempts").read_bytes() == b"2 ok"


def test_a_later_invocation_tries_again_and_success_is_recorded(cache_dir: Path) -> None:
    failing = Fetcher(UnavailableError("throttled"))
    with pytest.raises(UnavailableError, match="throttled"):
        TokenCache(cache_dir, FRESH).get_or_fetch(KEY, failing, lock_timeout=1)
    marker = cache_dir / f"{KEY}.attempts"
    assert marker.read_bytes() == b"1 failed 4 throttled"
    good = Fetcher(make_token())
    _token, outcome = TokenCache(cache_dir, FRESH).get_or_fetch(KEY, good, lock_timeout=1)
    assert (failing.calls, good.calls, outcome, marker.read_bytes()) == (1, 1, "fetched", b"2 ok")


def test_the_failure_marker_is_compared_by_count_not_by_clock(cache_dir: Path) -> None:
    # A marker from the future (a clock step, or a planted file) does not stop a run starting now.
    marker = cache_dir / f"{KEY}.attempts"
    marker.write_bytes(b"5 failed")
    marker.chmod(0o600)
    future = time.time() + 3600
    os.utime(marker, (future, future))
    good = Fetcher(make_token())
    assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, good, lock_timeout=1)[1] == "fetched"
    assert marker.read_bytes() == b"6 ok"


@pytest.mark.parametrize("content", [b"x failed", b"-1 failed", b"1 maybe", b"9" * 40 + b" failed", b""])
def test_a_garbled_marker_counts_as_none(cache_dir: Path, content: bytes) -> None:
    marker = cache_dir / f"{KEY}.attempts"
    marker.write_bytes(content)
    marker.chmod(0o600)
    assert TokenCache(cache_dir, FRESH)._read_attempts(KEY) == (0, None)
    assert TokenCache(cache_dir, FRESH).get_or_fetch(KEY, Fetcher(make_token()), lock_timeout=1)[1] == "fetched"


@pytest.mark.parametrize("suffix", [".attempts", ".lock"])
def test_a_fifo_at_a_marker_or_lock_path_does_not_block(
    cache_dir: Path, suffix: str, warnings_log: Callable[[], str]
) -> None:
    path = cache_dir / f"{KEY}{suffix}"
    os.mkfifo(path, 0o600)
    fetch = Fetcher(UnavailableError("throttled"))  # a failure is recorded: the marker is opened for writing
    thread, outcome = in_thread(lambda: TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=1))
    thread.join(30)
    if thread.is_alive():  # unblock it (a writer appears, then goes) so the daemon thread can end
        os.close(os.open(path, os.O_RDWR | os.O_NONBLOCK))
        pytest.fail(f"a FIFO at the {suffix} path blocked the run")
    assert isinstance(outcome[0], UnavailableError) and fetch.calls == 1


def test_a_failed_refresh_serves_a_valid_cached_token_and_reports_it(cache_dir: Path) -> None:
    stale = make_token(lifetime=3600, age=2000)  # past its refresh point, still valid
    TokenCache(cache_dir, FRESH).store(KEY, stale)
    fetch = Fetcher(UnavailableError("throttled"))
    seen: list[Token] = []
    token, outcome = TokenCache(cache_dir, FRESH).get_or_fetch(KEY, fetch, lock_timeout=1, on_usable=seen.append)
    assert (token, outcome, fetch.calls) == (stale, "stale", 1)
    assert seen == [stale]


def test_stale_temp_files_are_removed_on_write(cache_dir: Path) -> None:
    old_tmp, new_tmp = cache_dir / ".tmp-old.json", cache_dir / ".tmp-new.json"
    old_tmp.write_text("{")
    new_tmp.write_text("{")
    os.utime(old_tmp, (time.time() - 3600, time.time() - 3600))
    TokenCache(cache_dir, FRESH).store(KEY, make_token())
    assert not old_tmp.exists() and new_tmp.exists()  # a writer may still be using the new one


def test_an_existing_readable_directory_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    assert prepare_cache_dir(directory) == str(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_readable_default_directory_holding_the_launchers_runtime_dir_is_made_private(
    tmp_path: Path, warnings_log: Callable[[], str]
) -> None:
    """The default cache directory holds the launcher's `runtime` directory of unpacked bundles;
    an AMI build that made it 0755 must not turn the token cache off."""
    directory = tmp_path / "ecr-credential-provider"
    (directory / "runtime" / ("0" * 64)).mkdir(parents=True, mode=0o700)
    directory.chmod(0o755)
    assert prepare_cache_dir(directory) == str(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert "disabled" not in warnings_log()


def test_a_readable_directory_holding_a_runtime_file_is_refused(tmp_path: Path) -> None:
    """Only a directory named `runtime` is the launcher's."""
    directory = tmp_path / "cache"
    directory.mkdir()
    (directory / "runtime").write_text("")
    directory.chmod(0o755)
    assert prepare_cache_dir(directory) is None


def test_a_corrupt_entry_is_reported_once_per_run(cache_dir: Path, warnings_log: Callable[[], str]) -> None:
    write_entry(cache_dir, b"{not json")
    cache = TokenCache(cache_dir, FRESH)
    cache.get_or_fetch(KEY, Fetcher(make_token()), lock_timeout=1)
    assert warnings_log().count("corrupt") == 1


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757], ids=oct)
def test_prepare_refuses_a_directory_whose_parent_others_can_write(
    tmp_path: Path, mode: int, warnings_log: Callable[[], str]
) -> None:
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(mode)
    assert prepare_cache_dir(parent / "cache") is None
    assert f"{parent} is writable by group or others" in warnings_log()
    assert not (parent / "cache").exists()  # nothing is created in a refused directory


def test_prepare_accepts_a_sticky_world_writable_parent_like_tmp(tmp_path: Path) -> None:
    parent = tmp_path / "tmp"
    parent.mkdir()
    parent.chmod(0o1777)
    assert prepare_cache_dir(parent / "cache") == str(parent / "cache")


@needs_root
def test_prepare_refuses_a_directory_whose_parent_another_user_owns(
    tmp_path: Path, warnings_log: Callable[[], str]
) -> None:
    parent = tmp_path / "theirs"
    parent.mkdir(mode=0o755)
    os.chown(parent, NOBODY, NOBODY)
    (parent / "cache").mkdir(mode=0o700)
    assert prepare_cache_dir(parent / "cache") is None
    assert f"owned by uid {NOBODY}" in warnings_log()


def test_a_readable_directory_holding_other_files_is_refused_not_made_private(
    tmp_path: Path, warnings_log: Callable[[], str]
) -> None:
    # `--cache-dir /var/cache` (a shared parent) must not be chmod-ed to 0700 under other services.
    shared = tmp_path / "var-cache"
    (shared / "apt").mkdir(parents=True)
    shared.chmod(0o755)
    assert prepare_cache_dir(shared) is None
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert "not a cache file" in warnings_log()


def test_a_readable_directory_holding_only_cache_files_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    TokenCache(directory, FRESH).get_or_fetch(KEY, Fetcher(make_token()), lock_timeout=1)
    directory.chmod(0o755)
    assert prepare_cache_dir(directory) == str(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_marker_of_an_older_version_shares_its_failure_as_unavailable(cache_dir: Path) -> None:
    marker = cache_dir / f"{KEY}.attempts"
    marker.write_bytes(b"3 failed")
    marker.chmod(0o600)
    count, failure = TokenCache(cache_dir, FRESH)._read_attempts(KEY)
    assert count == 3 and isinstance(failure, UnavailableError)


# ---- one run at a time for an identity that cannot be named (fetch_alone) --------------------------

FLIGHT = key_digest({"test": "unnamed flight"})


def _queue_alone_behind(cache_dir: Path, lock_waits: threading.Event,
                        error: ProviderError) -> tuple[list[Any], Fetcher]:
    holder = _hold_lock(cache_dir, FLIGHT)
    queued = Fetcher(make_token())
    thread, outcome = in_thread(lambda: TokenCache(cache_dir, FRESH).fetch_alone(FLIGHT, queued, lock_timeout=60))
    assert lock_waits.wait(30)
    TokenCache(cache_dir, FRESH)._record_attempt(FLIGHT, 0, error)
    os.close(holder)
    thread.join(30)
    assert not thread.is_alive()
    return outcome, queued


def test_an_unnamed_flight_shares_an_unavailable_aws_with_the_runs_behind_it(
        cache_dir: Path, lock_waits: threading.Event) -> None:
    outcome, queued = _queue_alone_behind(cache_dir, lock_waits, UnavailableError("throttled"))
    assert isinstance(outcome[0], UnavailableError) and queued.calls == 0


def test_an_unnamed_flight_shares_no_denial_the_runs_may_be_other_identities(
        cache_dir: Path, lock_waits: threading.Event) -> None:
    outcome, queued = _queue_alone_behind(cache_dir, lock_waits, AuthError("denied"))
    assert outcome == [queued.result] and queued.calls == 1


def test_an_unnamed_flight_records_its_unavailability(cache_dir: Path) -> None:
    with pytest.raises(UnavailableError):
        TokenCache(cache_dir, FRESH).fetch_alone(FLIGHT, Fetcher(UnavailableError("throttled")), lock_timeout=1)
    assert TokenCache(cache_dir, FRESH)._read_attempts(FLIGHT)[0] == 1
    token = make_token()
    assert TokenCache(cache_dir, FRESH).fetch_alone(FLIGHT, Fetcher(token), lock_timeout=1) == token
    assert TokenCache(cache_dir, FRESH)._read_attempts(FLIGHT) == (2, None)
