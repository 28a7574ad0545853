"""The token cache shared by every invocation on the node.

One JSON file per key in a private directory. A per-key `fcntl` lock makes concurrent cold
invocations (the kubelet runs one process per image at node boot) wait for a single
GetAuthorizationToken call instead of each making their own. Each process answers one request, so
there is no in-memory level: the file is read once per run.

Threat model: entries hold live registry passwords. They live in a 0700 directory as 0600 files owned
by the running user (root on a node), the same trust boundary as the kubelet's own credentials; the
directory must be one that only root or we can change (trust.py), and ours.

Standard library only, and only modules the interpreter has built in or a hit needs anyway (json):
this is the cache-hit path.
"""

from __future__ import annotations

import math
import os
import time

from ecr_kubelet import jsoncodec, logs, private_files, redact
from ecr_kubelet.errors import AuthError, BadInputError, ProviderError, UnavailableError
from ecr_kubelet.hashing import sha256
from ecr_kubelet.models import CLOCK_SKEW, MAX_PASSWORD, MAX_TOKEN_LIFETIME, MAX_USERNAME, Token, is_token_text
from ecr_kubelet.trust import Untrusted, trusted_directory

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Literal, TypeVar

    from ecr_kubelet.freshness import Freshness
    from ecr_kubelet.models import Identity, Registry

    Outcome = Literal["hit", "fetched", "stale"]
    Result = TypeVar("Result")
    StrPath = str | os.PathLike[str]

log = logs.get(__name__)

ENTRY_VERSION = 1
_MAX_ENTRY_BYTES = 64 * 1024
_MAX_ATTEMPTS_BYTES = 1024
# The error classes a failed fetch is shared as, by the exit code recorded with it.
_ERRORS_BY_CODE: dict[str, type[ProviderError]] = {
    str(kind.exit_code): kind for kind in (ProviderError, BadInputError, AuthError, UnavailableError)
}
# How far the run that fetches for the others raises its CPU priority meanwhile (nice steps; see
# _run_ahead): 5 changed nothing measurable in a storm of 50 on 2 CPUs, 10 had the call out 0.3-0.5 s
# sooner, 19 no more than 10.
RUN_AHEAD = 10
# Temp files of writers killed mid-write are removed once they are this old.
_STALE_TEMP_SECONDS = 600.0

def cache_key(registry: Registry, identity: Identity, endpoints: dict[str, str]) -> str | None:
    """The entry a token for this registry and identity lives under; None: never cache it (an identity
    that cannot be named). The configured API endpoint is part of it: a test server's or another
    partition's tokens never answer for the real one."""
    fingerprint = identity.fingerprint()
    if fingerprint is None:
        return None
    return key_digest({
        "service": registry.service, "partition": registry.partition, "region": registry.region,
        "account": registry.account or "", "variant": registry.variant, "identity": fingerprint,
        "endpoint": endpoints.get(registry.service, ""),
    })


def unnamed_flight_key(registry: Registry, identity: Identity, endpoints: dict[str, str]) -> str:
    """The lock the runs for this registry share while their identity cannot be named: all that is
    known of the identity (mode, roles, user) is in it, which credentials sign is not."""
    return key_digest({
        "service": registry.service, "partition": registry.partition, "region": registry.region,
        "account": registry.account or "", "variant": registry.variant, "endpoint": endpoints.get(registry.service, ""),
        "unnamed": f"{identity.mode};{identity.role_arn};{identity.registry_role};{identity.uid}",
    })


def key_digest(parts: dict[str, str]) -> str:
    """File name for a cache key: a hash, so no identity detail is readable from the directory."""
    canonical = jsoncodec.dumps(parts, sort_keys=True, compact=True)
    return sha256(canonical.encode()).hexdigest()[:40]


class TokenCache:
    def __init__(self, directory: StrPath | None, freshness: Freshness) -> None:
        self.directory = None if directory is None else os.fspath(directory)
        self.freshness = freshness
        self._warned: set[str] = set()  # entries already reported as unusable, to warn once
        self._niceness_before: int | None = None  # while this run fetches ahead of the others (_run_ahead)

    # -- single flight -------------------------------------------------------------------------

    def get_or_fetch(
        self, key: str, fetch: Callable[[], Token], lock_timeout: float,
        on_usable: Callable[[Token], None] | None = None,
    ) -> tuple[Token, Outcome]:
        """A fresh cached token, or one fetched by exactly one of the processes that need it.

        One flight per key for the whole fetch, retries included: a run that finds the key's lock held
        waits for its holder up to `lock_timeout` (its own deadline) and never calls AWS beside it. The
        runs queued behind a fetch wait together (a shared lock), so when it succeeds they all answer
        from the cache at once, not one after another; when it fails, every one of them fails at once
        with the holder's error (see _failure_while_queued). A still-valid cached token is served
        instead when a refresh is unavailable (throttled, 5xx, timeout) or the wait runs out.
        `on_usable` hears of a cached token that is past its refresh point but still valid, the answer
        of last resort should the refresh outlive the run's deadline.
        """
        cached = self.lookup(key)
        if cached is not None and self.freshness.is_fresh(cached, time.time()):
            return cached, "hit"
        if cached is not None and on_usable is not None:
            on_usable(cached)
        # How many fetches of this key had finished when we queued (see _failure_while_queued).
        attempts_before = self._read_attempts(key)[0]
        end = time.monotonic() + lock_timeout
        try:
            lock = self._open_lock(key)
            try:
                held = lock is not None and _try_lock(lock)
                if lock is not None and held is False and _wait(lock, end, shared=True):
                    # Another run was fetching: we queued behind it beside the other runs that need it.
                    entry, fresh = self._left_by_holder(key, attempts_before)
                    if entry is not None and fresh:
                        return entry, "hit"
                    # It ended with neither a token nor an error (killed): fetch it ourselves, one run at
                    # a time. Let go first: where flock is emulated with POSIX locks (NFS), two runs
                    # turning a shared lock into an exclusive one in place would wait for each other.
                    private_files.unlock(lock)
                    held = _wait(lock, end, shared=False)
                # Whoever held the lock before us may have refreshed the entry already.
                entry, fresh = self._left_by_holder(key, attempts_before)
                if entry is not None and fresh:
                    return entry, "hit"
                cached = entry or cached
                token = self._fetch_and_record(key, fetch, attempts_before, locked=held is True)
            finally:
                if lock is not None:
                    os.close(lock)  # closing releases the flock
        except UnavailableError as exc:
            if cached is not None and self.freshness.is_usable(cached, time.time()):
                log.warning("serving the cached token, still valid, because refreshing failed: %s", exc)
                return cached, "stale"
            raise
        return token, "fetched"

    def _left_by_holder(self, key: str, attempts_before: int) -> tuple[Token | None, bool]:
        """What the run that held the key's lock before us left: the key's entry (if still usable) and
        whether it is fresh; its failure is raised when it failed and left no fresh token."""
        entry = self.lookup(key)
        if entry is not None and self.freshness.is_fresh(entry, time.time()):
            return entry, True
        failure = self._failure_while_queued(key, attempts_before)
        if failure is not None:
            log.info("the token fetch this run waited for failed; not repeating it")
            raise failure
        return entry, False

    def fetch_alone(self, flight: str, fetch: Callable[[], Result], lock_timeout: float) -> Result:
        """Run `fetch` while holding the lock of `flight`, a key that names no identity: one run at a
        time, and an unavailable AWS (throttled, 5xx, timeout) met by the holder is shared with the
        runs queued behind it. Tokens are not shared through it: the runs may be different identities.
        """
        attempts_before = self._read_attempts(flight)[0]
        lock = self._lock(flight, lock_timeout)
        try:
            failure = self._failure_while_queued(flight, attempts_before)
            if isinstance(failure, UnavailableError):
                raise failure
            raised = self._run_ahead(lock is not None)
            try:
                result = fetch()
            except UnavailableError as exc:
                self._record_attempt(flight, attempts_before, exc)
                raise
            finally:
                self._fall_back_in_line(raised)
            self._record_attempt(flight, attempts_before, None)
            return result
        finally:
            if lock is not None:
                os.close(lock)

    def _fetch_and_record(self, key: str, fetch: Callable[[], Token], attempts_before: int, locked: bool) -> Token:
        """Call `fetch` under the key's lock (when `locked`) and record how it ended for the runs queued
        behind us."""
        raised = self._run_ahead(locked)
        try:
            try:
                token = fetch()
            except ProviderError as exc:
                if exc.shared_with_waiters:
                    self._record_attempt(key, attempts_before, exc)
                raise
            except Exception as exc:  # a bug: the waiters fail as we do, not each by calling AWS again
                self._record_attempt(key, attempts_before, ProviderError(f"internal error: {type(exc).__name__}"))
                raise
            self.store(key, token)  # before the lock is let go: the waiters read it next
            self._record_attempt(key, attempts_before, None)
        finally:
            self._fall_back_in_line(raised)
        return token

    # -- the fetch ahead of the runs that wait for it -----------------------------------------------

    def _run_ahead(self, locked: bool) -> bool:
        """Raise this run's CPU priority by RUN_AHEAD (nice) while it fetches for the runs queued behind
        it: True if raised here (the caller gives it back with _fall_back_in_line). Not where there is
        no lock (no one waits for us), not where not permitted (not root), and once: a fetch within a
        fetch (an unnamed flight that can name its identity after all) keeps the first raise.

        At node boot the kubelet starts dozens of runs at once; each costs tens of milliseconds of CPU to
        start, and the one that fetches needs a few hundred more (botocore) before anyone can answer. At an
        equal share it finishes after nearly all of them have started, and the CPU then waits on the API's
        answer; ahead of them, its call goes out while they start (a storm of 50 on 2 CPUs: about 0.3 s
        sooner). The raise ends with the fetch, before the lock is let go; a `credential_process` started
        meanwhile runs at it too, as part of the fetch the others wait for.
        """
        if not locked or self._niceness_before is not None:
            return False
        try:
            before = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, 0, max(-20, before - RUN_AHEAD))
        except OSError:
            return False
        self._niceness_before = before
        return True

    def _fall_back_in_line(self, raised: bool) -> None:
        if not raised:
            return  # not ours to give back
        before, self._niceness_before = self._niceness_before, None
        if before is not None:
            try:  # noqa: SIM105 (contextlib is not loaded on a hit)
                os.setpriority(os.PRIO_PROCESS, 0, before)  # a lower priority is always allowed
            except OSError:
                pass

    # -- failures seen while queued ------------------------------------------------------------

    def _failure_while_queued(self, key: str, attempts_before: int) -> ProviderError | None:
        """The error of the fetch we queued behind, if it failed while we waited.

        At node boot dozens of invocations queue on one key; repeating a failed call once per process
        would only add load to an API that is already struggling. Each run that calls AWS counts its
        fetch in the key's `.attempts` file, with the error class and line of a failure; a run that
        finds the count raised while it waited, and the last fetch failed, fails with that error.
        Runs that start after the failure read the raised count and try again, one at a time (the
        lock); runs that fail this way record nothing. No clock is compared, so clock steps change
        nothing.
        """
        attempts, failure = self._read_attempts(key)
        return failure if attempts > attempts_before else None

    def _read_attempts(self, key: str) -> tuple[int, ProviderError | None]:
        """(fetches finished so far, the last one's error if it failed); (0, None) if unknown."""
        if self.directory is None:
            return 0, None
        raw = private_files.read_usable(self._path(key, ".attempts"), _MAX_ATTEMPTS_BYTES, private=True)
        if raw is None:
            return 0, None
        count, _, rest = raw.decode("utf-8", "replace").partition(" ")
        state, _, rest = rest.partition(" ")
        if not (count.isascii() and count.isdigit() and len(count) <= 18 and state in ("ok", "failed")):
            return 0, None
        if state == "ok":
            return int(count), None
        code, _, message = rest.partition(" ")
        # A marker of an older version has no code: throttled, 5xx and timeouts were all it shared.
        error = _ERRORS_BY_CODE.get(code, UnavailableError)
        return int(count), error(_one_line(message) or "the GetAuthorizationToken call this invocation waited "
                                 "for failed; not repeating it")

    def _record_attempt(self, key: str, attempts_before: int, failure: ProviderError | None) -> None:
        if self.directory is None:
            return
        # Under the key's lock: nobody else writes the file while we read and replace it. The error
        # line is secret-free by contract (ProviderError) and scrubbed again; the file is 0600.
        count = max(self._read_attempts(key)[0], attempts_before) + 1
        if failure is None:
            body = f"{count} ok"
        else:
            body = f"{count} failed {failure.exit_code} {_one_line(redact.scrub(str(failure)))}"
        try:
            self._write_file(key, ".attempts", body.encode()[:_MAX_ATTEMPTS_BYTES])
        except OSError as exc:
            log.debug("could not record the fetch in the token cache: %s", exc.strerror)

    # -- storage -------------------------------------------------------------------------------

    def lookup(self, key: str) -> Token | None:
        """The key's entry, if it is there, intact and still usable (never an expired token)."""
        token = self._read(key) if self.directory is not None else None
        if token is not None and not self.freshness.is_usable(token, time.time()):
            return None
        return token

    def store(self, key: str, token: Token) -> None:
        if not token.cacheable or not self.freshness.is_usable(token, time.time()):
            return  # another identity's, no expiry, or too close to it: nothing to keep
        if self.directory is not None:
            try:
                self._write(key, token)
            except OSError as exc:
                log.warning("could not write the token cache in %s: %s", self.directory, exc.strerror)

    def _path(self, key: str, suffix: str) -> str:
        assert self.directory is not None
        return os.path.join(self.directory, f"{key}{suffix}")

    def _read(self, key: str) -> Token | None:
        path = self._path(key, ".json")
        try:
            raw = private_files.read_file(path, _MAX_ENTRY_BYTES, private=True)
            if raw is None:
                return None
            token = _decode_entry(raw, key, time.time())
        except private_files.TooLarge:
            token = None  # larger than any entry we write: as one that does not decode
        except private_files.UnusableFile as exc:
            self._warn_once(key, "ignoring %s cache entry %s: %s", exc.what, os.path.basename(path), exc.reason)
            return None
        if token is None:
            self._warn_once(key, "ignoring corrupt or incompatible cache entry %s", os.path.basename(path))
        return token

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _write(self, key: str, token: Token) -> None:
        body = jsoncodec.dumps({
            "version": ENTRY_VERSION, "key": key, "username": token.username, "password": token.password,
            "expires_at": token.expires_at, "fetched_at": token.fetched_at,
        }).encode()
        self._write_file(key, ".json", body)

    def _write_file(self, key: str, suffix: str, body: bytes) -> None:
        """Atomically replace the key's file (private_files.write_file: 0600, fsync, rename)."""
        assert self.directory is not None
        _remove_stale_temp_files(self.directory)
        private_files.write_file(self.directory, f"{key}{suffix}", body)

    def _open_lock(self, key: str) -> int | None:
        """The key's inter-process lock file, open; None when going on without it (no directory, or a
        lock file that cannot be used)."""
        if self.directory is None:
            return None
        try:
            return private_files.open_lock(self._path(key, ".lock"))
        except OSError as exc:
            log.warning("cannot open the cache lock: %s; going on without it", exc.strerror)
        except private_files.UnusableFile:
            log.warning("cannot use the cache lock: it is not a regular file; going on without it")
        return None

    def _lock(self, key: str, timeout: float) -> int | None:
        """Take the key's lock, exclusive, waiting at most `timeout` seconds: the open lock file, which
        the caller closes to release it, or None when going on without it. Raises UnavailableError when
        the wait runs out."""
        fd = self._open_lock(key)
        if fd is None:
            return None
        try:
            locked = _wait(fd, time.monotonic() + timeout, shared=False)
        except BaseException:
            os.close(fd)
            raise
        if locked:
            return fd
        os.close(fd)
        return None


def _try_lock(fd: int) -> bool | None:
    """Take the lock if no one holds it: True; False: someone does; None: this file system cannot lock
    (warned), so the run goes on without the lock rather than fail the pull."""
    try:
        return private_files.try_lock(fd)
    except OSError as exc:  # e.g. ENOLCK where the file system has no flock: never fail the pull
        log.warning("cannot lock the token cache: %s; going on without the lock", exc.strerror)
        return None


def _wait(fd: int, end: float, *, shared: bool) -> bool:
    """Take the lock, exclusive or shared, waiting until `end` (monotonic) at most (private_files.lock).
    True: locked; False: this file system cannot lock (warned), so the run goes on without the lock
    rather than fail the pull. Raises UnavailableError when the wait runs out."""
    try:
        if private_files.lock(fd, end - time.monotonic(), shared=shared, waiting=_waiting):
            return True
    except OSError as exc:
        log.warning("cannot lock the token cache: %s; going on without the lock", exc.strerror)
        return False
    # Never call AWS beside the run that holds the lock: with dozens of runs queued at node boot,
    # that would multiply the calls exactly while ECR throttles.
    raise UnavailableError("gave up waiting for another run's token fetch, still going (AWS slow or throttling); "
                           "not calling AWS beside it")


def _waiting() -> None:
    log.info("another run is fetching this token; waiting for it")


def _remove_stale_temp_files(directory: str) -> None:
    """Temp files of writers that were killed (the kubelet's 60 s kill) before renaming them."""
    from contextlib import suppress

    cutoff = time.time() - _STALE_TEMP_SECONDS
    with suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(".tmp-") and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                with suppress(OSError):
                    os.unlink(entry.path)


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _decode_entry(raw: bytes, key: str, now: float) -> Token | None:
    """The entry's token if every field is what we write and within bounds; else None (the entry's size is
    bounded by its read, private_files.read_file)."""
    try:
        data: Any = jsoncodec.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or set(data) != _ENTRY_FIELDS:
        return None
    if type(data["version"]) is not int or data["version"] != ENTRY_VERSION or data["key"] != key:
        return None
    username, password = data["username"], data["password"]
    expires_at, fetched_at = data["expires_at"], data["fetched_at"]
    if not (is_token_text(username, MAX_USERNAME) and ":" not in username and is_token_text(password, MAX_PASSWORD)):
        return None
    if not (_is_number(expires_at) and _is_number(fetched_at)):
        return None
    try:
        expires, fetched = float(expires_at), float(fetched_at)
    except OverflowError:  # float(10**400)
        return None
    # Finite (json.loads accepts NaN and Infinity), fetched in the past 12 h (not in the future),
    # and expiring after its fetch, at most 12 h later: anything else is not an entry we wrote.
    if not (math.isfinite(expires) and math.isfinite(fetched)):
        return None
    if not (now - MAX_TOKEN_LIFETIME - CLOCK_SKEW <= fetched <= now + CLOCK_SKEW):
        return None
    if not (fetched < expires <= fetched + MAX_TOKEN_LIFETIME + CLOCK_SKEW):
        return None
    return Token(username=username, password=password, expires_at=expires, fetched_at=fetched)


_ENTRY_FIELDS = frozenset({"version", "key", "username", "password", "expires_at", "fetched_at"})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# `.host` and `log`: the Docker helper's notes of the registries it served (for `list`) and its log.
_CACHE_FILE = r"[0-9a-f]{40}\.(?:json|lock|attempts|host)|\.tmp-.*|log"


# The launcher's directory of unpacked bundles (packaging/launcher.c: <default cache dir>/runtime);
# its entries never look like cache files, and the cache never touches it.
_LAUNCHER_RUNTIME_DIR = "runtime"


def _foreign_entry(directory: str) -> str | None:
    """The name of something in the directory that neither this cache nor the launcher wrote, if any."""
    import re  # only for a directory that is not private yet
    try:
        with os.scandir(directory) as entries:
            return next((e.name for e in entries if not re.fullmatch(_CACHE_FILE, e.name)
                         and not (e.name == _LAUNCHER_RUNTIME_DIR and e.is_dir(follow_symlinks=False))), None)
    except OSError as exc:
        return f"<unlistable: {exc.strerror}>"


def prepare_cache_dir(path: StrPath) -> str | None:
    """The private cache directory, created if missing, as the path it resolves to (used from then
    on), or None with a warning when we must not trust it (trust.py) or it is not ours."""
    try:
        directory = trusted_directory(os.fspath(path), create=True)
        info = os.lstat(directory)
    except Untrusted as exc:
        log.warning("token cache disabled: refusing %s because %s", os.fspath(path), exc)
        return None
    except OSError as exc:
        log.warning("token cache disabled: cannot check %s: %s", os.fspath(path), exc.strerror)
        return None
    if info.st_uid != os.geteuid():  # root's directory is trusted, but the entries must be private to us
        log.warning("token cache disabled: refusing %s because it is owned by uid %d, not %d", directory,
                    info.st_uid, os.geteuid())
        return None
    if info.st_mode & 0o077:
        # Ours and not writable by others, only readable: make it private as it should be, but only
        # if it is a cache directory (an operator's `--cache-dir /var/cache` must not lock out others).
        foreign = _foreign_entry(directory)
        if foreign is not None:
            log.warning("token cache disabled: %s is readable by others and holds %r, which is not a cache "
                        "file: not making it private (use a dedicated directory)", directory, foreign)
            return None
        try:
            os.chmod(directory, 0o700, follow_symlinks=False)
        except (OSError, NotImplementedError) as exc:
            log.warning("could not make %s private (mode 0700): %s", directory, exc)
    return directory
