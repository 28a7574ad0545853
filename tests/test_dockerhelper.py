"""Docker credential-helper mode end to end: the installed command (or the built binary) invoked as
`docker-credential-ecr-login` (a symlink) or as `ecr-credential-provider docker-credential <verb>`,
against the local AWS stub. Every test is marked e2e; CI runs them against the built binary too.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import FAKE_SECRET_ACCESS_KEY
from connect_proxy import ConnectProxy
from helpers import StubClient, install_docker_helper, make_request, require_tool
from registry_server import make_tls
from stub_server import StubServer
from test_cli_e2e import PRIVATE_HOSTS

pytestmark = pytest.mark.e2e

ACCT = "123456789012"
OTHER = "210987654321"
HOST = f"{ACCT}.dkr.ecr.us-east-1.amazonaws.com"
ROLE = "arn:aws:iam::111122223333:role/ci-pull"
NOT_FOUND = "credentials not found in native keychain\n"
FOREIGN = [
    "registry-1.docker.io", "https://index.docker.io/v1/", "ghcr.io", "quay.io", "localhost:5000",
    "registry.example.com", f"{HOST}.evil.example", f"evil.{HOST}", f"{ACCT}.dkr.ecr.us-east-1.amazonaws.lol",
    "12345678901.dkr.ecr.us-east-1.amazonaws.com", "1234567890123.dkr.ecr.us-east-1.amazonaws.com",
    f"{ACCT}.dkr.ecr.cn-north-1.amazonaws.com", "public.ecr.aws.evil.example", "xpublic.ecr.aws",
    f"https://{ACCT}.dkr.cat.us-east-1.amazonaws.com/v2/", "[::1]:5000", "not a url", "ftp://public.ecr.aws",
    "user@" + HOST,
]

Helper = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def helper_path(provider_cmd: list[str], tmp_path: Path) -> Path:
    """`docker-credential-ecr-login` as users install it: a symlink to our executable."""
    return install_docker_helper(provider_cmd, tmp_path / "bin")


@pytest.fixture
def helper(helper_path: Path, provider_cmd: list[str], provider_env: dict[str, str]) -> Helper:
    def run(stdin: str, verb: str = "get", *, env: dict[str, str] | None = None,
            subcommand: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = [*provider_cmd, "docker-credential", verb] if subcommand else [str(helper_path), verb]
        return subprocess.run(cmd, input=stdin, env=provider_env if env is None else env,
                              capture_output=True, text=True, timeout=70, check=False)

    return run


def credentials(result: subprocess.CompletedProcess[str], server_url: str) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1
    body = json.loads(result.stdout)
    assert body.keys() == {"ServerURL", "Username", "Secret"}
    assert body["ServerURL"] == server_url and body["Username"] == "AWS"
    secret: str = body["Secret"]
    return secret


def failure(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The protocol's error channel is stdout: one line, which clients show; nothing else."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("docker-credential-ecr-login: ")
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout


def token_calls(stub: StubClient) -> list[dict[str, Any]]:
    return [c for c in stub.calls() if c["action"] == "GetAuthorizationToken"]


# ---- get -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", sorted(PRIVATE_HOSTS))
def test_private_registry_in_every_partition_and_variant(helper: Helper, stub: StubClient, host: str) -> None:
    secret = credentials(helper(host + "\n"), host)
    [call] = stub.calls("ecr")
    assert call["region"] == PRIVATE_HOSTS[host] and call["registry_ids"] == [ACCT]
    assert secret == call["password"]


@pytest.mark.parametrize("host", ["public.ecr.aws", "ecr-public.aws.com"])
def test_public_ecr(helper: Helper, stub: StubClient, host: str) -> None:
    secret = credentials(helper(host), host)
    [call] = stub.calls("ecr-public")
    assert call["region"] == "us-east-1" and secret == call["password"]


@pytest.mark.parametrize("form", [HOST, f"https://{HOST}", f"https://{HOST}/v2/", f"{HOST}:443",
                                  f"http://{HOST.upper()}./v1/", f"  {HOST}  \n"])
def test_server_url_with_or_without_scheme_path_or_port(helper: Helper, stub: StubClient, form: str) -> None:
    secret = credentials(helper(form), form.strip())
    [call] = stub.calls("ecr")
    assert call["registry_ids"] == [ACCT] and secret == call["password"]


@pytest.mark.parametrize("server_url", FOREIGN)
def test_foreign_and_look_alike_hosts_are_not_found_without_an_aws_call(
    helper: Helper, stub: StubClient, server_url: str
) -> None:
    result = helper(server_url)
    assert (result.returncode, result.stdout, result.stderr) == (1, NOT_FOUND, "")
    assert stub.calls() == []


def test_cross_account_registry_asks_for_its_own_account(helper: Helper, stub: StubClient) -> None:
    host = f"{OTHER}.dkr.ecr.eu-west-1.amazonaws.com"
    credentials(helper(host), host)
    [call] = stub.calls("ecr")
    assert call["registry_ids"] == [OTHER] and call["region"] == "eu-west-1"


def test_role_arn_from_the_environment_is_assumed_first(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    secret = credentials(helper(HOST, env={**provider_env, "AWS_ECR_ROLE_ARN": ROLE}), HOST)
    [sts] = stub.calls("sts", "AssumeRole")
    [ecr] = stub.calls("ecr")
    assert sts["role_arn"] == ROLE and ecr["access_key_id"] == sts["issued_access_key_id"]
    assert secret == ecr["password"]


def test_bad_role_arn_in_the_environment_is_one_clean_error(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    message = failure(helper(HOST, env={**provider_env, "AWS_ECR_ROLE_ARN": "not-an-arn"}), 2)
    assert "environment: AWS_ECR_ROLE_ARN is not an IAM role ARN" in message and stub.calls() == []


def test_subcommand_answers_like_the_helper_name(helper: Helper, stub: StubClient) -> None:
    first = credentials(helper(HOST, subcommand=True), HOST)
    assert credentials(helper(HOST), HOST) == first
    assert len(token_calls(stub)) == 1


def test_public_ecr_outside_the_aws_partition_is_not_found(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    result = helper("public.ecr.aws", env={**provider_env, "AWS_DEFAULT_REGION": "cn-north-1"})
    assert (result.returncode, result.stdout) == (1, NOT_FOUND)
    assert token_calls(stub) == []


def test_empty_input_is_the_protocols_missing_server_url(helper: Helper, stub: StubClient) -> None:
    result = helper("\n")
    assert (result.returncode, result.stdout) == (1, "no credentials server URL\n")


# The host each host family's GetAuthorizationToken request really goes to: botocore's endpoint rule set.
# (For IPv4 FIPS that is api.ecr-fips.*, while the client's meta.endpoint_url, which test_awsapi.py
# checks, says ecr-fips.*: the rule set wins when the request is sent.)
API_ENDPOINTS = {
    HOST: "api.ecr.us-east-1.amazonaws.com",
    f"{ACCT}.dkr.ecr-fips.us-east-1.amazonaws.com": "api.ecr-fips.us-east-1.amazonaws.com",
    f"{ACCT}.dkr.ecr-fips.us-gov-west-1.amazonaws.com": "api.ecr-fips.us-gov-west-1.amazonaws.com",
    f"{ACCT}.dkr-ecr.eu-west-1.on.aws": "ecr.eu-west-1.api.aws",
    f"{ACCT}.dkr-ecr-fips.us-east-2.on.aws": "ecr-fips.us-east-2.api.aws",
    f"{ACCT}.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn": "ecr.cn-north-1.api.amazonwebservices.com.cn",
    "public.ecr.aws": "api.ecr-public.us-east-1.amazonaws.com",
    "ecr-public.aws.com": "ecr-public.us-east-1.api.aws",
}


@pytest.fixture(scope="module")
def api_proxy(stub_server: StubServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConnectProxy, Path]]:
    """AWS's real API host names, served by the stub behind TLS from a test CA (see connect_proxy)."""
    directory = tmp_path_factory.mktemp("api-tls")
    make_tls(directory, sorted(set(API_ENDPOINTS.values())))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "server.pem", directory / "server.key")
    port = int(stub_server.url.rsplit(":", 1)[1])
    proxy = ConnectProxy({}, {name: (port, context) for name in API_ENDPOINTS.values()}).start()
    yield proxy, directory / "ca.pem"
    proxy.stop()


@pytest.mark.parametrize("host", sorted(API_ENDPOINTS))
def test_fips_dual_stack_and_public_hosts_call_their_own_api_endpoint(
    helper: Helper, stub: StubClient, provider_env: dict[str, str], api_proxy: tuple[ConnectProxy, Path], host: str
) -> None:
    proxy, ca = api_proxy
    env = {k: v for k, v in provider_env.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env.update(HTTPS_PROXY=proxy.url, AWS_CA_BUNDLE=str(ca))
    seen = len(proxy.requested)
    result = helper(host, env=env)
    assert proxy.requested[seen:] == [f"{API_ENDPOINTS[host]}:443"]
    secret = credentials(result, host)
    assert [c["password"] for c in token_calls(stub)] == [secret]


def test_a_cache_dir_shared_with_amazons_helper_serves_both(
    helper: Helper, stub: StubClient, provider_env: dict[str, str], api_proxy: tuple[ConnectProxy, Path],
    tmp_path: Path
) -> None:
    """AWS_ECR_CACHE_DIR=~/.ecr, as users of docker-credential-ecr-login have it: our entries sit next to its
    cache.json, and each keeps using its own."""
    amazon = require_tool("Debian's docker-credential-ecr-login",
                          shutil.which("docker-credential-ecr-login", path="/usr/bin"))
    proxy, ca = api_proxy
    env = {k: v for k, v in provider_env.items() if not k.startswith(("AWS_ENDPOINT_URL", "ECR_KUBELET_CACHE"))}
    env.update(HTTPS_PROXY=proxy.url, AWS_CA_BUNDLE=str(ca), AWS_ECR_CACHE_DIR="~/.ecr")
    theirs = subprocess.run([amazon, "get"], input=HOST, env=env, capture_output=True, text=True, check=False)
    assert credentials(theirs, HOST)
    ours = credentials(helper(HOST, env=env), HOST)
    assert credentials(helper(HOST, env=env), HOST) == ours
    again = subprocess.run([amazon, "get"], input=HOST, env=env, capture_output=True, text=True, check=False)
    assert credentials(again, HOST) == json.loads(theirs.stdout)["Secret"]
    cache = Path(env["HOME"]) / ".ecr"
    assert (cache / "cache.json").exists() and len(list(cache.glob("*.json"))) == 2
    assert len(token_calls(stub)) == 2  # one each, then both from their caches


# ---- failures: non-zero, one line, never a secret --------------------------------------------------


def test_access_denied_is_reported_not_hidden(helper: Helper, stub: StubClient) -> None:
    stub.configure(deny=True)
    message = failure(helper(HOST), 3)
    assert "ecr:GetAuthorizationToken" in message and "AccessDeniedException" in message
    assert FAKE_SECRET_ACCESS_KEY not in message


def test_outage_without_a_cached_token_fails_with_exit_4(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    stub.configure(fail_all=True)
    message = failure(helper(HOST, env={**provider_env, "AWS_MAX_ATTEMPTS": "1"}), 4)
    assert "ServiceUnavailableException" in message


def test_outage_serves_the_still_valid_cached_token(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    stub.configure(token_lifetime_seconds=3600)
    secret = credentials(helper(HOST), HOST)
    # Past its refresh point (half its life), still valid: a failed refresh serves it.
    stub.configure(fail_all=True)
    env = {**provider_env, "AWS_MAX_ATTEMPTS": "1"}
    entry = next(Path(env["ECR_KUBELET_CACHE_DIR"]).glob("*.json"))
    data = json.loads(entry.read_text())
    data["fetched_at"] -= 4000  # refresh point = midpoint of fetch and expiry, now past
    entry.write_text(json.dumps(data))
    result = helper(HOST, env=env)
    assert credentials(result, HOST) == secret
    assert "still valid" in result.stderr and secret not in result.stderr
    assert len(token_calls(stub)) == 2


def test_a_hung_aws_call_ends_at_the_deadline_with_one_line(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    stub.configure(delay_seconds=8)
    message = failure(helper(HOST, env={**provider_env, "ECR_KUBELET_TIMEOUT": "2s"}), 4)
    # Where the deadline fell (during the call, before it, or in something that ignores it) decides the
    # wording; the outcome is the same.
    assert message.startswith("docker-credential-ecr-login: gave up after 2s: ") and "--timeout" not in message


def test_a_hung_refresh_answers_with_the_still_valid_cached_token(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    stub.configure(token_lifetime_seconds=3600)
    secret = credentials(helper(HOST), HOST)
    entry = next(Path(provider_env["ECR_KUBELET_CACHE_DIR"]).glob("*.json"))
    data = json.loads(entry.read_text())
    data["fetched_at"] -= 4000  # past its refresh point, still valid
    entry.write_text(json.dumps(data))
    stub.configure(delay_seconds=8)
    result = helper(HOST, env={**provider_env, "ECR_KUBELET_TIMEOUT": "2s"})
    assert credentials(result, HOST) == secret
    assert "cached token, still valid" in result.stderr  # from the retry loop or at the deadline itself
    assert secret not in result.stderr


def test_bad_timeout_in_the_environment_is_one_clean_error(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    assert "'1d'" in failure(helper(HOST, env={**provider_env, "ECR_KUBELET_TIMEOUT": "1d"}), 2)
    message = failure(helper(HOST, env={**provider_env, "ECR_KUBELET_TIMEOUT": "90s"}), 2)
    assert "ECR_KUBELET_TIMEOUT must be more than 0s and at most 58s" in message and "--timeout" not in message
    assert stub.calls() == []


def test_no_aws_credentials(helper: Helper, stub: StubClient, provider_env: dict[str, str]) -> None:
    env = {k: v for k, v in provider_env.items() if not k.startswith("AWS_ACCESS_KEY_ID")}
    env.pop("AWS_SECRET_ACCESS_KEY")
    message = failure(helper(HOST, env=env), 3)
    assert "no" in message.lower() and "credentials" in message


def test_no_secret_reaches_stderr_or_the_error_at_any_verbosity(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    env = {**provider_env, "ECR_KUBELET_VERBOSE": "2", "AWS_SESSION_TOKEN": "session-token-do-not-leak-0123"}
    result = helper(HOST, env=env)
    secret = credentials(result, HOST)
    assert HOST in result.stderr  # the verbose log says what it did
    for value in (secret, FAKE_SECRET_ACCESS_KEY, "session-token-do-not-leak-0123"):
        assert value not in result.stderr
    stub.configure(deny=True)
    denied = helper(f"{OTHER}.dkr.ecr.us-east-1.amazonaws.com", env=env)
    assert denied.returncode == 3
    for value in (FAKE_SECRET_ACCESS_KEY, "session-token-do-not-leak-0123"):
        assert value not in denied.stdout + denied.stderr


# ---- public ECR falls back to anonymous pulls ---------------------------------------------------------


def without_aws_credentials(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


PUBLIC_FAILURES: dict[str, tuple[dict[str, Any], Callable[[dict[str, str]], dict[str, str]] | None, str]] = {
    "no-credentials": ({}, without_aws_credentials, "no AWS credentials"),
    "denied": ({"deny": True}, None, "AccessDeniedException"),
    "throttled": ({"throttle_next": 1000}, None, "Throttl"),
    "outage": ({"fail_all": True}, None, "ServiceUnavailableException"),
}


@pytest.mark.parametrize("host", ["public.ecr.aws", "ecr-public.aws.com"])
@pytest.mark.parametrize("case", sorted(PUBLIC_FAILURES))
def test_public_ecr_without_a_token_is_not_found_so_the_client_pulls_anonymously(
    helper: Helper, stub: StubClient, provider_env: dict[str, str], host: str, case: str
) -> None:
    settings, change_env, reason = PUBLIC_FAILURES[case]
    if settings:
        stub.configure(**settings)
    env = {**provider_env, "AWS_MAX_ATTEMPTS": "1"}
    if case == "throttled":  # retried until the deadline
        env["ECR_KUBELET_TIMEOUT"] = "3s"
    env = change_env(env) if change_env else env
    result = helper(host, env=env)
    assert (result.returncode, result.stdout, result.stderr) == (1, NOT_FOUND, "")
    # At -v it says which happened: AWS's answer, or (where the deadline fell first, as on a loaded machine)
    # that it ran out of time.
    verbose = helper(host, env={**env, "ECR_KUBELET_VERBOSE": "1"})
    assert (verbose.returncode, verbose.stdout) == (1, NOT_FOUND)
    said = verbose.stderr.lower()
    assert "anonymously" in said and (reason.lower() in said or "gave up after" in said), verbose.stderr
    assert FAKE_SECRET_ACCESS_KEY not in verbose.stderr


@pytest.mark.parametrize("case", ["no-credentials", "denied", "outage"])
def test_a_private_registry_keeps_the_clear_error(
    helper: Helper, stub: StubClient, provider_env: dict[str, str], case: str
) -> None:
    settings, change_env, _ = PUBLIC_FAILURES[case]
    if settings:
        stub.configure(**settings)
    env = {**provider_env, "AWS_MAX_ATTEMPTS": "1"}
    result = helper(HOST, env=change_env(env) if change_env else env)
    assert result.returncode in (3, 4) and result.stdout != NOT_FOUND
    failure(result, result.returncode)


def test_a_hung_public_ecr_call_is_not_found_at_the_deadline(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    stub.configure(delay_seconds=8)
    result = helper("public.ecr.aws", env={**provider_env, "ECR_KUBELET_TIMEOUT": "2s"})
    assert (result.returncode, result.stdout) == (1, NOT_FOUND)


# ---- the helper's own deadline: stdin, the lock and AWS ------------------------------------------------


def test_the_deadline_covers_reading_stdin(helper_path: Path, provider_env: dict[str, str], stub: StubClient) -> None:
    """A client that never closes stdin does not hang the helper past its deadline."""
    proc = subprocess.Popen([str(helper_path), "get"], env={**provider_env, "ECR_KUBELET_TIMEOUT": "2s"},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(HOST)
    proc.stdin.flush()  # ... and never closed
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the helper still waited for stdin after its deadline")
    finally:
        proc.stdin.close()
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 2 and stdout.count("\n") == 1 and "ECR_KUBELET_TIMEOUT" in stdout, (stdout, stderr)
    assert stub.calls() == []


def test_parallel_jobs_under_sustained_throttling_end_at_the_helpers_own_deadline(
    helper_path: Path, provider_env: dict[str, str], stub: StubClient
) -> None:
    """A CI runner's 10 parallel jobs while ECR throttles: each ends by the helper's 20 s default (not the
    kubelet mode's 57 s), with one line; the bound leaves room for a busy machine."""
    import time

    stub.configure(throttle_next=100000)
    env = {k: v for k, v in provider_env.items() if k != "ECR_KUBELET_TIMEOUT"}
    started = time.monotonic()
    procs = [subprocess.Popen([str(helper_path), "get"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(10)]
    try:
        for proc in procs:  # every job's request first, as parallel jobs send theirs
            assert proc.stdin is not None
            proc.stdin.write(HOST)
            proc.stdin.close()
        for proc in procs:
            proc.wait(timeout=45)
        results = [(proc.stdout.read(), proc.stderr.read()) for proc in procs if proc.stdout and proc.stderr]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - started
    assert elapsed < 40, elapsed
    for proc, (stdout, _) in zip(procs, results, strict=True):
        assert proc.returncode == 4 and stdout.count("\n") == 1, (proc.returncode, stdout)
        assert stdout.startswith("docker-credential-ecr-login: ")


def test_the_helpers_default_deadline_is_its_own_and_the_variable_overrides_it(
    provider_env: dict[str, str]
) -> None:
    from ecr_kubelet.flags import parse_options
    from ecr_kubelet.options import DEFAULT_TIMEOUT

    helper_options = parse_options([], provider_env, helper=True)
    kubelet_options = parse_options([], provider_env)
    assert helper_options is not None and kubelet_options is not None
    assert helper_options.timeout == 20.0 and kubelet_options.timeout == DEFAULT_TIMEOUT
    overridden = parse_options([], {**provider_env, "ECR_KUBELET_TIMEOUT": "45s"}, helper=True)
    assert overridden is not None and overridden.timeout == 45.0


# ---- AWS_ECR_CACHE_DIR as Amazon's helper takes it -----------------------------------------------------


def test_an_empty_aws_ecr_cache_dir_is_amazons_default_with_a_warning(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    env = {k: v for k, v in provider_env.items() if k != "ECR_KUBELET_CACHE_DIR"}
    env["AWS_ECR_CACHE_DIR"] = ""
    result = helper(HOST, env=env)
    secret = credentials(result, HOST)
    default = Path(env["HOME"]) / ".ecr"
    assert "AWS_ECR_CACHE_DIR is empty" in result.stderr and str(default) in result.stderr
    assert result.stderr.startswith("docker-credential-ecr-login: ")
    assert list(default.glob("*.json")) and credentials(helper(HOST, env=env), HOST) == secret
    assert len(token_calls(stub)) == 1


def test_a_relative_aws_ecr_cache_dir_is_from_the_working_directory_with_a_warning(
    helper_path: Path, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in provider_env.items() if k != "ECR_KUBELET_CACHE_DIR"}
    env["AWS_ECR_CACHE_DIR"] = "ecr-cache"
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    results = [subprocess.run([str(helper_path), "get"], input=HOST, env=env, cwd=work, capture_output=True,
                              text=True, timeout=70, check=False) for _ in range(2)]
    assert credentials(results[0], HOST) == credentials(results[1], HOST)
    assert "AWS_ECR_CACHE_DIR='ecr-cache' is relative" in results[0].stderr
    assert list((work / "ecr-cache").glob("*.json")) and len(token_calls(stub)) == 1


def test_a_relative_aws_ecr_cache_dir_in_a_directory_others_can_change_is_not_used(
    helper_path: Path, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in provider_env.items() if k != "ECR_KUBELET_CACHE_DIR"}
    env["AWS_ECR_CACHE_DIR"] = "ecr-cache"
    work = tmp_path / "shared"
    work.mkdir()
    work.chmod(0o777)  # not sticky: anyone could swap the cache directory
    result = subprocess.run([str(helper_path), "get"], input=HOST, env=env, cwd=work, capture_output=True,
                            text=True, timeout=70, check=False)
    credentials(result, HOST)
    assert "token cache disabled" in result.stderr and not (work / "ecr-cache").exists()


# ---- where helper users look: --help, the helper's name, the log ---------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_help_exits_0_with_usage(helper: Helper, stub: StubClient, flag: str) -> None:
    result = helper("", flag)
    assert result.returncode == 0 and result.stdout.startswith("Usage: docker-credential-ecr-login <store|get")
    assert "get" in result.stdout and result.stderr == "" and stub.calls() == []


def test_a_cache_turned_off_is_said_under_the_helpers_name_and_in_its_log(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    cache = Path(provider_env["ECR_KUBELET_CACHE_DIR"])
    cache.mkdir(mode=0o755)
    cache.chmod(0o755)
    (cache / "notes.txt").write_text("not a cache file\n")
    env = {**provider_env, "AWS_SESSION_TOKEN": "session-token-do-not-leak-0123"}
    result = helper(HOST, env=env)
    secret = credentials(result, HOST)
    [line] = result.stderr.splitlines()
    assert line.startswith("docker-credential-ecr-login: WARNING: token cache disabled")
    log_file = cache / "log" / "ecr-login.log"
    assert "token cache disabled" in log_file.read_text()
    assert log_file.stat().st_mode & 0o777 == 0o600 and (cache / "log").stat().st_mode & 0o777 == 0o700
    # Every run says it again, and nothing secret is ever written there, at any verbosity.
    helper(HOST, env={**env, "ECR_KUBELET_VERBOSE": "2"})
    text = log_file.read_text()
    assert text.count("token cache disabled") == 2 and HOST in text
    for value in (secret, FAKE_SECRET_ACCESS_KEY, "session-token-do-not-leak-0123"):
        assert value not in text


def test_a_run_with_nothing_to_say_writes_no_log(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    credentials(helper(HOST), HOST)
    credentials(helper(HOST), HOST)
    assert not (Path(provider_env["ECR_KUBELET_CACHE_DIR"]) / "log").exists()


def test_the_log_is_rotated(helper: Helper, stub: StubClient, provider_env: dict[str, str]) -> None:
    log_dir = Path(provider_env["ECR_KUBELET_CACHE_DIR"]) / "log"
    log_dir.mkdir(parents=True, mode=0o700)
    full = log_dir / "ecr-login.log"
    full.write_text("old line\n" * (1024 * 1024 // 9 + 1))
    full.chmod(0o600)
    credentials(helper(HOST, env={**provider_env, "ECR_KUBELET_VERBOSE": "1"}), HOST)
    assert (log_dir / "ecr-login.log.1").read_text().startswith("old line")
    assert full.stat().st_size < 64 * 1024 and HOST in full.read_text()


def test_a_log_file_that_is_a_link_or_not_ours_is_not_written(
    helper: Helper, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    log_dir = Path(provider_env["ECR_KUBELET_CACHE_DIR"]) / "log"
    log_dir.mkdir(parents=True, mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("")
    (log_dir / "ecr-login.log").symlink_to(target)
    result = helper(HOST, env={**provider_env, "ECR_KUBELET_VERBOSE": "1"})
    credentials(result, HOST)
    assert target.read_text() == "" and "not keeping a log" in result.stderr


def test_an_amazon_log_file_left_readable_is_made_private(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    log_dir = Path(provider_env["ECR_KUBELET_CACHE_DIR"]) / "log"
    log_dir.mkdir(parents=True, mode=0o700)
    (log_dir / "ecr-login.log").write_text("time=... level=debug msg=\"Listing credentials\"\n")
    (log_dir / "ecr-login.log").chmod(0o644)  # as Amazon's helper creates it
    credentials(helper(HOST, env={**provider_env, "ECR_KUBELET_VERBOSE": "1"}), HOST)
    assert (log_dir / "ecr-login.log").stat().st_mode & 0o777 == 0o600


# ---- the other verbs, as docker-credential-ecr-login answers them ----------------------------------


@pytest.mark.parametrize("verb", ["store", "erase"])
def test_store_and_erase_are_not_implemented(helper: Helper, stub: StubClient, verb: str) -> None:
    stdin = json.dumps({"ServerURL": HOST, "Username": "AWS", "Secret": "user-supplied-secret-x"})
    result = helper(stdin if verb == "store" else HOST, verb)
    assert (result.returncode, result.stdout) == (1, "not implemented\n")
    assert "user-supplied-secret-x" not in result.stderr


@pytest.mark.parametrize("verb", ["store", "erase"])
def test_store_and_erase_succeed_when_told_to_ignore_them(
    helper: Helper, stub: StubClient, provider_env: dict[str, str], verb: str
) -> None:
    stdin = json.dumps({"ServerURL": HOST, "Username": "AWS", "Secret": "user-supplied-secret-x"})
    result = helper(stdin, verb, env={**provider_env, "AWS_ECR_IGNORE_CREDS_STORAGE": "true"})
    assert (result.returncode, result.stdout) == (0, "")
    assert "user-supplied-secret-x" not in result.stderr and stub.calls() == []


def test_list_before_any_get_is_an_empty_object(helper: Helper, stub: StubClient) -> None:
    result = helper("", "list")
    assert (result.returncode, result.stdout) == (0, "{}\n")
    assert stub.calls() == []


def test_list_answers_the_registries_served_from_the_cache_and_no_secret(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    other = f"{OTHER}.dkr.ecr.eu-west-1.amazonaws.com"
    secrets = [credentials(helper(f"https://{HOST}/v2/"), f"https://{HOST}/v2/"),
               credentials(helper("public.ecr.aws"), "public.ecr.aws"), credentials(helper(other), other)]
    calls = len(stub.calls())
    result = helper("", "list")
    assert result.returncode == 0 and result.stdout.count("\n") == 1
    assert json.loads(result.stdout) == {f"https://{HOST}": "AWS", "https://public.ecr.aws": "AWS",
                                         f"https://{other}": "AWS"}
    assert len(stub.calls()) == calls  # answered from the cache directory: no AWS call
    assert not any(secret in result.stdout + result.stderr for secret in secrets)
    # A registry whose entry left the cache is no longer listed.
    cache = Path(provider_env["ECR_KUBELET_CACHE_DIR"])
    [note] = [n for n in cache.glob("*.host") if n.read_text() == other]
    (cache / (note.stem + ".json")).unlink()
    assert set(json.loads(helper("", "list").stdout)) == {f"https://{HOST}", "https://public.ecr.aws"}


def test_list_is_bounded_and_lists_only_ecr_hosts(
    helper: Helper, stub: StubClient, provider_env: dict[str, str]
) -> None:
    credentials(helper(HOST), HOST)
    cache = Path(provider_env["ECR_KUBELET_CACHE_DIR"])
    [note] = cache.glob("*.host")
    entry = note.with_suffix(".json").read_bytes()
    for i in range(150):  # planted notes: far more than the bound, one of them not an ECR host
        key = f"{i:040x}"
        host = "registry.example.com" if i == 0 else f"{100000000000 + i}.dkr.ecr.us-east-1.amazonaws.com"
        for suffix, body in ((".host", host.encode()), (".json", entry)):
            path = cache / (key + suffix)
            path.write_bytes(body)
            path.chmod(0o600)
    listed = json.loads(helper("", "list").stdout)
    assert len(listed) == 100 and "https://registry.example.com" not in listed
    assert all(url.startswith("https://") and url.endswith(".amazonaws.com") for url in listed)


@pytest.mark.parametrize("verb", ["version", "-v", "--version"])
def test_version(helper: Helper, verb: str) -> None:
    result = helper("", verb)
    assert result.returncode == 0 and result.stdout.startswith("docker-credential-ecr-login (ecr-kubelet) ")


def test_unknown_verb_and_missing_verb(helper_path: Path, provider_env: dict[str, str]) -> None:
    unknown = subprocess.run([str(helper_path), "delete"], input="", env=provider_env,
                             capture_output=True, text=True, check=False)
    assert (unknown.returncode, unknown.stdout) == (1, "docker-credential-ecr-login: unknown action: delete\n")
    usage = subprocess.run([str(helper_path)], input="", env=provider_env,
                           capture_output=True, text=True, check=False)
    assert usage.returncode == 1 and usage.stdout.startswith("Usage: docker-credential-ecr-login <store|get")


# ---- one cache with the kubelet mode ---------------------------------------------------------------


def kubelet_password(provider_cmd: list[str], env: dict[str, str], host: str = HOST) -> str:
    request = json.dumps(make_request(f"{host}/team/app")) + "\n"
    result = subprocess.run(provider_cmd, input=request, env=env, capture_output=True, text=True,
                            timeout=70, check=False)
    assert result.returncode == 0, result.stderr
    password: str = json.loads(result.stdout)["auth"][host]["password"]
    return password


def test_kubelet_mode_then_helper_make_one_call(
    helper: Helper, stub: StubClient, provider_cmd: list[str], provider_env: dict[str, str]
) -> None:
    password = kubelet_password(provider_cmd, provider_env)
    assert credentials(helper(f"https://{HOST}"), f"https://{HOST}") == password
    assert len(token_calls(stub)) == 1


def test_helper_then_kubelet_mode_make_one_call_also_with_a_role(
    helper: Helper, stub: StubClient, provider_cmd: list[str], provider_env: dict[str, str]
) -> None:
    env = {**provider_env, "AWS_ECR_ROLE_ARN": ROLE}
    secret = credentials(helper(HOST, env=env), HOST)
    assert kubelet_password(provider_cmd, env) == secret
    assert kubelet_password([*provider_cmd, "--role-arn", ROLE], provider_env) == secret
    assert len(token_calls(stub)) == 1 and len(stub.calls("sts", "AssumeRole")) == 1
    # Another identity (no role) is another entry.
    assert credentials(helper(HOST), HOST) != secret


def test_concurrent_helper_and_kubelet_invocations_make_a_single_call(
    helper_path: Path, provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient, tmp_path: Path
) -> None:
    stub.configure(delay_seconds=0.3)  # widens the overlap; the result must not depend on it
    request = (json.dumps(make_request(f"{HOST}/team/app")) + "\n").encode()
    jobs = [([str(helper_path), "get"], HOST.encode()) if i % 2 else (provider_cmd, request) for i in range(20)]
    procs = []
    try:
        # All started first, each blocked reading stdin; then released together.
        for cmd, _ in jobs:
            procs.append(subprocess.Popen(cmd, env=provider_env, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for proc, (_, data) in zip(procs, jobs, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(data)
            proc.stdin.close()
        outputs = []
        for proc in procs:
            assert proc.stdout is not None
            outputs.append(proc.stdout.read().decode())
            assert proc.wait(timeout=60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    passwords = {json.loads(out).get("Secret") or json.loads(out)["auth"][HOST]["password"] for out in outputs}
    assert len(passwords) == 1 and len(token_calls(stub)) == 1


# ---- the ECR helper's cache variables --------------------------------------------------------------


def test_aws_ecr_cache_dir_selects_the_cache_and_ecr_kubelet_cache_dir_wins(
    helper: Helper, stub: StubClient, provider_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in provider_env.items() if k != "ECR_KUBELET_CACHE_DIR"}
    env["AWS_ECR_CACHE_DIR"] = "~/ecr-cache"  # expanded like the ECR helper does
    first = credentials(helper(HOST, env=env), HOST)
    assert list((Path(env["HOME"]) / "ecr-cache").glob("*.json"))
    assert credentials(helper(HOST, env=env), HOST) == first
    assert len(token_calls(stub)) == 1
    ours = {**env, "ECR_KUBELET_CACHE_DIR": str(tmp_path / "ours")}
    assert credentials(helper(HOST, env=ours), HOST) != first
    assert list((tmp_path / "ours").glob("*.json")) and len(token_calls(stub)) == 2


@pytest.mark.parametrize("value", ["1", "true", "0"])  # any value disables it, as in the ECR helper
def test_aws_ecr_disable_cache_calls_the_api_every_time(
    helper: Helper, stub: StubClient, provider_env: dict[str, str], value: str
) -> None:
    env = {**provider_env, "AWS_ECR_DISABLE_CACHE": value}
    credentials(helper(HOST, env=env), HOST)
    credentials(helper(HOST, env=env), HOST)
    assert len(token_calls(stub)) == 2
    assert not os.path.exists(env["ECR_KUBELET_CACHE_DIR"]) or not list(Path(env["ECR_KUBELET_CACHE_DIR"]).iterdir())
