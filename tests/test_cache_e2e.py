"""The token cache end to end: the plugin run as the kubelet runs it, against the local AWS stub.

Every test is marked e2e; CI runs the same tests against the built binary (ECR_KUBELET_TEST_BINARY).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecr_kubelet.durations import parse_go_duration
from helpers import RunProvider, StubClient, binary_is_emulated, make_jwt, make_request, run_released_together
from metadata_server import CONTAINER_PATH, MetadataServer

pytestmark = pytest.mark.e2e

ACCOUNT = "123456789012"
REGISTRY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
IMAGE = f"{REGISTRY}/team/app"
OTHER_IMAGE = f"{REGISTRY}/team/other"  # same registry: same cache entry
SA_ROLE = "arn:aws:iam::111122223333:role/pull"
NODE_ROLE = "arn:aws:iam::111122223333:role/node-pull"
MARGIN = 300
HALF_DAY = 43200


def sa_request(sub: str, image: str = IMAGE) -> dict[str, Any]:
    return make_request(
        image,
        serviceAccountToken=make_jwt(sub),  # a new JWT every time, as the kubelet rotates them
        serviceAccountAnnotations={"eks.amazonaws.com/ecr-role-arn": SA_ROLE},
    )


def password_of(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    response = json.loads(proc.stdout)
    assert response["cacheKeyType"] == "Registry"
    assert list(response["auth"]) == [REGISTRY]
    password: str = response["auth"][REGISTRY]["password"]
    assert password.startswith("stubpw-")
    return password


def cache_seconds(proc: subprocess.CompletedProcess[str]) -> float:
    return parse_go_duration(json.loads(proc.stdout)["cacheDuration"])


def ecr_calls(stub: StubClient) -> list[dict[str, Any]]:
    return stub.calls("ecr", "GetAuthorizationToken")


def issued_passwords(stub: StubClient) -> list[str]:
    return [c["password"] for c in ecr_calls(stub) if c["status"] == 200]


def cache_dir(env: dict[str, str]) -> Path:
    return Path(env["ECR_KUBELET_CACHE_DIR"])


def entries(env: dict[str, str]) -> list[Path]:
    directory = cache_dir(env)
    return sorted(directory.glob("*.json")) if directory.exists() else []


def age_entries(env: dict[str, str], seconds: float) -> None:
    """Make every cached token `seconds` older, as the passing of time would (no sleeping)."""
    for path in entries(env):
        entry = json.loads(path.read_bytes())
        entry["fetched_at"] -= seconds
        entry["expires_at"] -= seconds
        path.write_text(json.dumps(entry))


def only_entry(env: dict[str, str]) -> dict[str, Any]:
    files = entries(env)
    assert len(files) == 1, files
    data: dict[str, Any] = json.loads(files[0].read_bytes())
    return data


# ---- reuse ----------------------------------------------------------------------------------------


def test_second_invocation_makes_no_api_call_and_returns_a_shorter_duration(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    started = time.time()
    first = run_provider(make_request(IMAGE))
    took = time.time() - started
    password = password_of(first)
    first_duration = cache_seconds(first)
    # a 12 h token is reused for half its life: the kubelet may keep it 6 h from its fetch
    assert HALF_DAY / 2 - took - 1 <= first_duration <= HALF_DAY / 2
    assert len(stub.calls()) == 1

    age_entries(provider_env, 600)  # ten minutes later
    second = run_provider(make_request(OTHER_IMAGE))
    assert password_of(second) == password
    assert len(stub.calls()) == 1
    assert first_duration - 600 - 60 <= cache_seconds(second) <= first_duration - 600  # the same refresh point


def run_concurrently(
    provider_cmd: list[str], env: dict[str, str], outputs: Path, count: int
) -> list[subprocess.CompletedProcess[str]]:
    """`count` cold invocations released at once, as the kubelet starts them at node boot: one per
    image (the kubelet de-duplicates runs per image, not per registry), all of one registry."""
    return run_released_together(provider_cmd, env, outputs,
                                 [make_request(f"{REGISTRY}/team/app-{i}") for i in range(count)])


def test_concurrent_cold_invocations_make_a_single_call(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient, tmp_path: Path
) -> None:
    stub.configure(delay_seconds=0.3)
    results = run_concurrently(provider_cmd, provider_env, tmp_path / "outputs", 50)
    passwords = {password_of(r) for r in results}
    assert len(results) == 50
    assert len(passwords) == 1
    assert all(json.loads(r.stdout)["auth"].keys() == {REGISTRY} for r in results)
    calls = ecr_calls(stub)
    assert len(calls) == 1, [c["time"] for c in calls]
    assert passwords == {calls[0]["password"]}
    assert only_entry(provider_env)["password"] in passwords


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_outage_at_boot_costs_one_call_not_one_per_invocation(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient, tmp_path: Path
) -> None:
    # The invocations queued behind a failed fetch fail at once with its error instead of repeating it.
    stub.configure(fail_all=True, delay_seconds=0.3)
    env = {**provider_env, "AWS_MAX_ATTEMPTS": "1"}
    results = run_concurrently(provider_cmd, env, tmp_path / "outputs", 20)
    assert [r.returncode for r in results] == [4] * 20
    assert len({one_error_line(r) for r in results}) == 1  # every run says what the one call met
    assert len(ecr_calls(stub)) == 1


def test_access_denied_at_boot_is_one_call_shared_by_every_run(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient, tmp_path: Path
) -> None:
    stub.configure(deny=True, delay_seconds=0.3)
    results = run_concurrently(provider_cmd, provider_env, tmp_path / "outputs", 10)
    assert [r.returncode for r in results] == [3] * 10
    assert all("AccessDenied" in one_error_line(r) for r in results)
    assert len(ecr_calls(stub)) == 1


def test_sustained_throttling_costs_the_calls_of_one_run_not_one_flight_per_run(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient, tmp_path: Path
) -> None:
    """While ECR throttles, the run that leads the flight retries until its deadline; the runs queued
    behind it wait for it and never call AWS themselves, however long it takes."""
    # Each answer takes 1 s, so one flight of at most 10 s holds at most 10 calls, one after another
    # (2 s and 20 s for a binary under emulation, whose start-up alone takes seconds).
    delay = 2.0 if binary_is_emulated() else 1.0
    stub.configure(throttle_next=10**6, delay_seconds=delay)
    results = run_concurrently([*provider_cmd, "--timeout", f"{10 * delay:g}s"], provider_env, tmp_path / "outputs",
                               10)
    assert [r.returncode for r in results] == [4] * 10
    for result in results:
        one_error_line(result)
    assert 1 <= len(ecr_calls(stub)) <= 10, [r.stderr for r in results]


def test_throttling_that_lifts_answers_every_run_from_one_flight(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient, tmp_path: Path
) -> None:
    stub.configure(throttle_next=5)
    results = run_concurrently(provider_cmd, provider_env, tmp_path / "outputs", 10)
    assert len({password_of(r) for r in results}) == 1
    assert len(ecr_calls(stub)) == 6  # five throttled attempts of the one flight, then its success
    assert issued_passwords(stub) == [password_of(results[0])]


# ---- keys: identities never share an entry -------------------------------------------------------


def test_two_access_keys_never_share_an_entry(
    run_provider: RunProvider, provider_env: dict[str, str], stub: StubClient
) -> None:
    env_a = provider_env
    env_b = {**provider_env, "AWS_ACCESS_KEY_ID": "AKIAOTHERKEYEXAMPLE0", "AWS_SECRET_ACCESS_KEY": "other"}
    pw_a = password_of(run_provider(make_request(IMAGE), env=env_a))
    pw_b = password_of(run_provider(make_request(IMAGE), env=env_b))
    assert pw_a != pw_b
    assert [c["access_key_id"] for c in ecr_calls(stub)] == [env_a["AWS_ACCESS_KEY_ID"], env_b["AWS_ACCESS_KEY_ID"]]
    assert len(entries(provider_env)) == 2
    # each identity gets its own token back, from the cache
    assert password_of(run_provider(make_request(IMAGE), env=env_a)) == pw_a
    assert password_of(run_provider(make_request(IMAGE), env=env_b)) == pw_b
    assert len(ecr_calls(stub)) == 2


def test_two_service_accounts_on_one_role_each_assume_it(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    pw_a = password_of(run_provider(sa_request("system:serviceaccount:ns:a")))
    pw_b = password_of(run_provider(sa_request("system:serviceaccount:ns:b")))
    assert pw_a != pw_b
    assumed = stub.calls("sts", "AssumeRoleWithWebIdentity")
    assert [(c["role_arn"], c["web_identity"]["sub"]) for c in assumed] == [
        (SA_ROLE, "system:serviceaccount:ns:a"),
        (SA_ROLE, "system:serviceaccount:ns:b"),
    ]
    # ECR was called with each service account's own session credentials, never the node's
    assert [c["access_key_id"] for c in ecr_calls(stub)] == [c["issued_access_key_id"] for c in assumed]
    assert len(entries(provider_env)) == 2

    # the same service account again, with a newly issued JWT: served from the cache
    before = len(stub.calls())
    assert password_of(run_provider(sa_request("system:serviceaccount:ns:a"))) == pw_a
    assert password_of(run_provider(sa_request("system:serviceaccount:ns:b", OTHER_IMAGE))) == pw_b
    assert len(stub.calls()) == before


def test_role_arn_and_node_credentials_have_separate_entries(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    node_pw = password_of(run_provider(make_request(IMAGE)))
    role_pw = password_of(run_provider(make_request(IMAGE), "--role-arn", NODE_ROLE))
    assert node_pw != role_pw
    assumed = stub.calls("sts", "AssumeRole")
    assert [c["role_arn"] for c in assumed] == [NODE_ROLE]
    assert [c["access_key_id"] for c in ecr_calls(stub)] == [
        provider_env["AWS_ACCESS_KEY_ID"],
        assumed[0]["issued_access_key_id"],
    ]
    assert len(entries(provider_env)) == 2
    assert password_of(run_provider(make_request(IMAGE), "--role-arn", NODE_ROLE)) == role_pw
    assert password_of(run_provider(make_request(IMAGE))) == node_pw
    assert len(stub.calls()) == 3  # 1 AssumeRole + 2 GetAuthorizationToken, nothing more


# ---- AWS trouble ----------------------------------------------------------------------------------


def test_cold_cache_survives_a_run_of_throttling(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    stub.configure(throttle_next=3)
    password = password_of(run_provider(make_request(IMAGE)))
    assert [c["status"] for c in ecr_calls(stub)] == [400, 400, 400, 200]
    assert issued_passwords(stub) == [password]
    assert only_entry(provider_env)["password"] == password
    assert password_of(run_provider(make_request(IMAGE))) == password
    assert len(ecr_calls(stub)) == 4


def test_outage_serves_the_still_valid_cached_token(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    stub.configure(token_lifetime_seconds=3600)
    password = password_of(run_provider(make_request(IMAGE)))
    expires_at = float(only_entry(provider_env)["expires_at"])

    stub.configure(fail_all=True)
    env = {**provider_env, "AWS_MAX_ATTEMPTS": "1"}
    age_entries(provider_env, 2400)  # 40 minutes later: past the refresh point, still valid
    expires_at -= 2400
    started = time.time()
    proc = run_provider(make_request(IMAGE), env=env)
    ended = time.time()
    assert password_of(proc) == password
    failed = [c for c in ecr_calls(stub) if c["status"] == 503]
    assert len(failed) == 1  # it did try to refresh
    assert "serving the cached token" in proc.stderr
    # the kubelet may keep it until expiry minus the margin, not longer
    usable_until = expires_at - MARGIN
    assert usable_until - ended - 1 <= cache_seconds(proc) <= usable_until - started
    assert cache_seconds(proc) < 3600 - MARGIN
    assert only_entry(provider_env)["password"] == password  # the good entry is kept


def test_outage_with_a_token_too_close_to_expiry_fails(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    # 400 s token: usable (and cached) for 100 s under the default 5m margin
    stub.configure(token_lifetime_seconds=400)
    started = time.time()
    first = run_provider(make_request(IMAGE))
    took = time.time() - started
    password_of(first)
    assert 100 - took - 1 <= cache_seconds(first) <= 100  # the margin, not the half-life, bounds it
    assert len(entries(provider_env)) == 1

    stub.configure(fail_all=True)
    env = {**provider_env, "AWS_MAX_ATTEMPTS": "1"}
    proc = run_provider(make_request(IMAGE), "--expiry-margin", "7m0s", env=env)  # 420 s > 400 s
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == ""
    assert [c["status"] for c in ecr_calls(stub)] == [200, 503]


def test_outage_with_an_expired_cached_token_fails(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    # a 1 h token, cached with no margin; then an hour and a minute pass
    stub.configure(token_lifetime_seconds=3600)
    password_of(run_provider(make_request(IMAGE), "--expiry-margin", "0s"))
    age_entries(provider_env, 3660)

    stub.configure(fail_all=True)
    env = {**provider_env, "AWS_MAX_ATTEMPTS": "1"}
    proc = run_provider(make_request(IMAGE), "--expiry-margin", "0s", env=env)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == ""
    assert [c["status"] for c in ecr_calls(stub)] == [200, 503]


# ---- switching the cache off ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "extra_env"),
    [
        (("--no-cache",), {}),
        ((), {"ECR_KUBELET_DISABLE_CACHE": "1"}),
        ((), {"ECR_KUBELET_DISABLE_CACHE": "true"}),
    ],
    ids=["flag", "env-1", "env-true"],
)
def test_disabled_cache_calls_the_api_every_time(
    args: tuple[str, ...],
    extra_env: dict[str, str],
    run_provider: RunProvider,
    stub: StubClient,
    provider_env: dict[str, str],
) -> None:
    env = {**provider_env, **extra_env}
    passwords = [password_of(run_provider(make_request(IMAGE), *args, env=env)) for _ in range(2)]
    assert len(set(passwords)) == 2
    assert issued_passwords(stub) == passwords
    assert not cache_dir(provider_env).exists()


def test_disable_env_set_to_zero_keeps_the_cache(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    env = {**provider_env, "ECR_KUBELET_DISABLE_CACHE": "0"}
    first = password_of(run_provider(make_request(IMAGE), env=env))
    assert password_of(run_provider(make_request(IMAGE), env=env)) == first
    assert len(ecr_calls(stub)) == 1


def test_cache_dir_flag_overrides_the_env(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    flag_dir = tmp_path / "flag-cache"
    first = password_of(run_provider(make_request(IMAGE), "--cache-dir", str(flag_dir)))
    assert len(list(flag_dir.glob("*.json"))) == 1
    assert not cache_dir(provider_env).exists()
    assert password_of(run_provider(make_request(IMAGE), "--cache-dir", str(flag_dir))) == first
    assert len(ecr_calls(stub)) == 1


# ---- what lands on disk ---------------------------------------------------------------------------


def test_cache_files_are_private_and_hold_no_aws_secret_or_sa_token(
    run_provider: RunProvider, provider_env: dict[str, str], stub: StubClient
) -> None:
    jwt = make_jwt("system:serviceaccount:ns:a")
    sa = make_request(
        IMAGE, serviceAccountToken=jwt, serviceAccountAnnotations={"eks.amazonaws.com/ecr-role-arn": SA_ROLE}
    )
    passwords = {
        password_of(run_provider(make_request(IMAGE))),
        password_of(run_provider(make_request(IMAGE), "--role-arn", NODE_ROLE)),
        password_of(run_provider(sa)),
    }
    assert len(passwords) == 3

    directory = cache_dir(provider_env)
    info = directory.lstat()
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.geteuid()
    files = sorted(directory.iterdir())
    assert len([f for f in files if f.suffix == ".json"]) == 3
    assert not [f for f in files if f.name.startswith(".tmp-")]
    secrets = [provider_env["AWS_SECRET_ACCESS_KEY"], provider_env["AWS_ACCESS_KEY_ID"], jwt, jwt.split(".")[2]]
    sts_calls = stub.calls("sts")
    assert len(sts_calls) == 2
    stored_passwords = set()
    for path in files:
        st = path.lstat()
        assert stat.S_ISREG(st.st_mode), path
        assert stat.S_IMODE(st.st_mode) == 0o600, path
        assert st.st_uid == os.geteuid()
        body = path.read_text()
        for secret in secrets:
            assert secret not in body, f"{path.name} holds a secret"
        for call in sts_calls:  # the session credentials STS issued are not stored either
            assert call["issued_access_key_id"] not in body
        if path.suffix == ".json":
            stored_passwords.add(json.loads(body)["password"])
    assert stored_passwords == passwords


@pytest.mark.parametrize(
    "garbage",
    [b'{"version": 1, "key": ', b"\x00\x01\x02 not json", b'{"version": 999}'],
    ids=["truncated", "garbage", "unknown-version"],
)
def test_corrupt_entry_is_replaced_after_a_run(
    garbage: bytes, run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str]
) -> None:
    first = password_of(run_provider(make_request(IMAGE)))
    (path,) = entries(provider_env)
    path.write_bytes(garbage)

    proc = run_provider(make_request(IMAGE))
    second = password_of(proc)
    assert second != first
    assert len(ecr_calls(stub)) == 2
    assert "ignoring corrupt or incompatible cache entry" in proc.stderr
    assert entries(provider_env) == [path]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_bytes())["password"] == second
    # and the repaired entry is used
    assert password_of(run_provider(make_request(IMAGE))) == second
    assert len(ecr_calls(stub)) == 2


# ---- the cache key follows the identity that really signs, for every credential source ----------


@pytest.fixture
def metadata() -> Iterator[MetadataServer]:
    server = MetadataServer().start()
    yield server
    server.stop()


def without_env_keys(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def signer(stub: StubClient) -> str:
    key: str = ecr_calls(stub)[-1]["access_key_id"]
    return key


def write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def test_shared_credentials_file_key_change_is_a_new_identity(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    creds = tmp_path / "credentials"
    env = {**without_env_keys(provider_env), "AWS_SHARED_CREDENTIALS_FILE": str(creds)}
    write_private(creds, "[default]\naws_access_key_id = AKIAFILEKEYAAAAAAAAA\naws_secret_access_key = s1\n")
    first = password_of(run_provider(make_request(IMAGE), env=env))
    assert password_of(run_provider(make_request(IMAGE), env=env)) == first  # same file: a hit
    assert len(ecr_calls(stub)) == 1

    write_private(creds, "[default]\naws_access_key_id = AKIAFILEKEYBBBBBBBBB\naws_secret_access_key = s2\n")
    second = password_of(run_provider(make_request(IMAGE), env=env))
    assert second != first and signer(stub) == "AKIAFILEKEYBBBBBBBBB"


def test_the_profile_pointed_to_is_part_of_the_identity(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    creds = tmp_path / "credentials"
    write_private(creds, "[default]\naws_access_key_id = AKIADEFAULTPROFILE00\naws_secret_access_key = s\n"
                         "[pull]\naws_access_key_id = AKIAPULLPROFILE00000\naws_secret_access_key = s\n")
    env = {**without_env_keys(provider_env), "AWS_SHARED_CREDENTIALS_FILE": str(creds)}
    password_of(run_provider(make_request(IMAGE), env=env))
    assert signer(stub) == "AKIADEFAULTPROFILE00"
    password_of(run_provider(make_request(IMAGE), env={**env, "AWS_PROFILE": "pull"}))
    assert signer(stub) == "AKIAPULLPROFILE00000" and len(ecr_calls(stub)) == 2

    # the profile's key changes in the file: the pull profile's next run is a new identity
    write_private(creds, "[default]\naws_access_key_id = AKIADEFAULTPROFILE00\naws_secret_access_key = s\n"
                         "[pull]\naws_access_key_id = AKIAPULLPROFILE11111\naws_secret_access_key = s\n")
    password_of(run_provider(make_request(IMAGE), env={**env, "AWS_PROFILE": "pull"}))
    assert signer(stub) == "AKIAPULLPROFILE11111" and len(ecr_calls(stub)) == 3


def test_a_changed_credential_process_is_a_new_identity(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config"
    script = tmp_path / "creds.sh"
    script.write_text('#!/bin/sh\necho "{\\"Version\\":1,\\"AccessKeyId\\":\\"$1\\",\\"SecretAccessKey\\":\\"s\\"}"\n')
    script.chmod(0o700)
    env = {**without_env_keys(provider_env), "AWS_CONFIG_FILE": str(config)}
    write_private(config, f"[default]\ncredential_process = {script} AKIAPROCESSKEYA00000\n")
    password_of(run_provider(make_request(IMAGE), env=env))
    password_of(run_provider(make_request(IMAGE), env=env))
    assert [c["access_key_id"] for c in ecr_calls(stub)] == ["AKIAPROCESSKEYA00000"]
    write_private(config, f"[default]\ncredential_process = {script} AKIAPROCESSKEYB00000\n")
    password_of(run_provider(make_request(IMAGE), env=env))
    assert signer(stub) == "AKIAPROCESSKEYB00000"


def test_instance_role_change_is_a_new_identity(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], metadata: MetadataServer
) -> None:
    env = {k: v for k, v in without_env_keys(provider_env).items() if k != "AWS_EC2_METADATA_DISABLED"}
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = metadata.url
    metadata.serve("node-role-a", "ASIAINSTANCEROLEA000")
    first = password_of(run_provider(make_request(IMAGE), env=env))
    assert signer(stub) == "ASIAINSTANCEROLEA000"
    # the role's credentials rotate: same role, still a hit
    metadata.serve("node-role-a", "ASIAINSTANCEROLEA111")
    assert password_of(run_provider(make_request(IMAGE), env=env)) == first
    assert len(ecr_calls(stub)) == 1
    # another instance profile role: never the previous role's token
    metadata.serve("node-role-b", "ASIAINSTANCEROLEB000")
    assert password_of(run_provider(make_request(IMAGE), env=env)) != first
    assert signer(stub) == "ASIAINSTANCEROLEB000"


def test_a_metadata_hiccup_while_naming_the_identity_is_still_one_flight(
    provider_cmd: list[str], stub: StubClient, provider_env: dict[str, str], metadata: MetadataServer,
    tmp_path: Path
) -> None:
    """A boot storm whose runs cannot name the node identity (instance metadata failing for a moment)
    still costs one call: the runs take the registry's lock, and the first one to fetch keeps the token
    under the name the identity has once the metadata answers again."""
    env = {k: v for k, v in without_env_keys(provider_env).items() if k != "AWS_EC2_METADATA_DISABLED"}
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = metadata.url
    metadata.serve("node-role-a", "ASIAINSTANCEROLEA000")
    metadata.naming_fails = True
    stub.configure(delay_seconds=0.3)
    results = run_concurrently(provider_cmd, env, tmp_path / "outputs", 10)
    assert 1 <= len({password_of(r) for r in results}) <= 2
    # One call; two at most, when a run that names the identity after the hiccup finds the first
    # fetch still under way (it holds the registry's lock, not the entry's).
    assert 1 <= len(ecr_calls(stub)) <= 2
    assert signer(stub) == "ASIAINSTANCEROLEA000"
    assert len(entries(provider_env)) == 1


def test_container_role_change_is_a_new_identity(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], metadata: MetadataServer
) -> None:
    env = {**without_env_keys(provider_env), "AWS_CONTAINER_CREDENTIALS_FULL_URI": metadata.url + CONTAINER_PATH}
    metadata.serve("unused", "ASIACONTAINERROLEA00", "arn:aws:iam::123456789012:role/task-a")
    first = password_of(run_provider(make_request(IMAGE), env=env))
    assert password_of(run_provider(make_request(IMAGE), env=env)) == first
    assert len(ecr_calls(stub)) == 1
    metadata.serve("unused", "ASIACONTAINERROLEB00", "arn:aws:iam::123456789012:role/task-b")
    assert password_of(run_provider(make_request(IMAGE), env=env)) != first
    assert signer(stub) == "ASIACONTAINERROLEB00"
    # without a RoleArn in the answer, the key itself names the identity
    metadata.serve("unused", "ASIACONTAINERNOROLE0", None)
    password_of(run_provider(make_request(IMAGE), env=env))
    assert signer(stub) == "ASIACONTAINERNOROLE0" and len(ecr_calls(stub)) == 3


def test_web_identity_from_the_environment_follows_the_token_subject(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    env = {**without_env_keys(provider_env), "AWS_ROLE_ARN": NODE_ROLE,
           "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file)}
    token_file.write_text(make_jwt("system:serviceaccount:kube-system:a"))
    first = password_of(run_provider(make_request(IMAGE), env=env))
    token_file.write_text(make_jwt("system:serviceaccount:kube-system:a"))  # rotated, same subject
    assert password_of(run_provider(make_request(IMAGE), env=env)) == first
    token_file.write_text(make_jwt("system:serviceaccount:kube-system:b"))
    assert password_of(run_provider(make_request(IMAGE), env=env)) != first
    subjects = [c["web_identity"]["sub"] for c in stub.calls("sts", "AssumeRoleWithWebIdentity")]
    assert subjects == ["system:serviceaccount:kube-system:a", "system:serviceaccount:kube-system:b"]
