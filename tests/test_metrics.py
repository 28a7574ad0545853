"""The metrics file (`--metrics-file`, ECR_KUBELET_METRICS_FILE) end to end: runs of the installed command
(or the built binary) against the local AWS stub, the file read back with prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import FAKE_SECRET_ACCESS_KEY
from ecr_kubelet import metrics
from helpers import RunProvider, StubClient, install_docker_helper, make_request

pytestmark = pytest.mark.e2e

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
OTHER_HOST = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"
ROLE = "arn:aws:iam::210987654321:role/ecr-pull"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def read_metrics(path: Path) -> Samples:
    """Every sample, by (sample name, sorted labels); the file must parse as Prometheus text format."""
    samples: Samples = {}
    families = list(text_string_to_metric_families(path.read_text()))
    types = {f.name: f.type for f in families}
    assert types == {name.removesuffix("_total"): kind for name, (kind, _) in metrics.FAMILIES.items()
                     if name.removesuffix("_total") in types}
    for family in families:
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, key
            samples[key] = sample.value
    return samples


def requests(samples: Samples, outcome: str, code: int, mode: str = "kubelet") -> float:
    labels = tuple(sorted({"mode": mode, "outcome": outcome, "exit_code": str(code)}.items()))
    return samples.get(("ecr_kubelet_requests_total", labels), 0)


def aws(samples: Samples, service: str, operation: str, result: str, code: str | None = None) -> float:
    labels = {"service": service, "operation": operation, "result": result}
    if code:
        labels["code"] = code
    return samples.get(("ecr_kubelet_aws_calls_total", tuple(sorted(labels.items()))), 0)


def value(samples: Samples, name: str) -> float:
    return samples.get((name, ()), 0)


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "textfile"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    return directory


def test_a_mix_of_hits_misses_and_failures_is_counted_across_runs(
    run_provider: RunProvider, stub: StubClient, metrics_dir: Path
) -> None:
    path = metrics_dir / "ecr.prom"
    flag = ("--metrics-file", str(path))
    started = time.time()
    assert run_provider(make_request(f"{HOST}/a"), *flag).returncode == 0  # miss
    assert run_provider(make_request(f"{HOST}/b"), *flag).returncode == 0  # hit
    assert run_provider(make_request(f"{HOST}/c"), *flag).returncode == 0  # hit
    assert run_provider(make_request("ghcr.io/org/app"), *flag).returncode == 0  # no credentials
    stub.configure(throttle_next=2)
    assert run_provider(make_request(f"{OTHER_HOST}/a"), *flag).returncode == 0  # miss, 2 throttled attempts
    stub.configure(deny=True)
    assert run_provider(make_request(f"{OTHER_HOST}/x"), "--no-cache", *flag).returncode == 3
    assert run_provider(b"{not json", *flag).returncode == 2
    samples = read_metrics(path)
    assert requests(samples, "answered", 0) == 4
    assert requests(samples, "no_credentials", 0) == 1
    assert requests(samples, "failed", 3) == 1 and requests(samples, "failed", 2) == 1
    assert value(samples, "ecr_kubelet_cache_hits_total") == 2
    assert value(samples, "ecr_kubelet_cache_misses_total") == 3
    assert value(samples, "ecr_kubelet_cache_stale_served_total") == 0
    assert aws(samples, "ecr", "GetAuthorizationToken", "success") == 2
    assert aws(samples, "ecr", "GetAuthorizationToken", "throttled", "ThrottlingException") == 2
    assert aws(samples, "ecr", "GetAuthorizationToken", "denied", "AccessDeniedException") == 1
    assert len(stub.calls("ecr")) == 5  # every attempt the stub saw is counted
    last_ok = value(samples, "ecr_kubelet_last_success_timestamp_seconds")
    last_failure = value(samples, "ecr_kubelet_last_failure_timestamp_seconds")
    assert started <= last_ok <= last_failure <= time.time()
    assert stat_mode(path) == 0o644
    assert sorted(p.name for p in metrics_dir.iterdir()) == [".ecr.prom.lock", "ecr.prom"]


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_sts_calls_of_a_registry_role_are_counted_and_no_secret_reaches_the_file(
    run_provider: RunProvider, stub: StubClient, metrics_dir: Path
) -> None:
    path = metrics_dir / "ecr.prom"
    result = run_provider(make_request(f"{OTHER_HOST}/a"), "--registry-role", f"210987654321={ROLE}",
                          "--metrics-file", str(path))
    assert result.returncode == 0, result.stderr
    samples = read_metrics(path)
    assert aws(samples, "sts", "AssumeRole", "success") == 1
    assert aws(samples, "ecr", "GetAuthorizationToken", "success") == 1
    text = path.read_text()
    password = json.loads(result.stdout)["auth"][OTHER_HOST]["password"]
    assert password not in text and FAKE_SECRET_ACCESS_KEY not in text and "stubsession-" not in text


def test_fifty_concurrent_runs_lose_no_increment(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient, metrics_dir: Path
) -> None:
    path = metrics_dir / "ecr.prom"
    env = {**provider_env, "ECR_KUBELET_METRICS_FILE": str(path)}
    request = (json.dumps(make_request(f"{HOST}/app")) + "\n").encode()
    warm = subprocess.run(provider_cmd, input=request, env=env, capture_output=True, timeout=60, check=False)
    assert warm.returncode == 0, warm.stderr
    # All 50 start and wait on stdin; the requests then go out back to back, so the runs reach the
    # metrics file together rather than one process start-up apart.
    procs = [subprocess.Popen(provider_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env) for _ in range(50)]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(request)
        proc.stdin.close()
    for proc in procs:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()  # a few hundred bytes each: no pipe fills up
        assert proc.wait(timeout=120) == 0 and err == b"" and json.loads(out)["auth"], err
        proc.stdout.close()
        proc.stderr.close()
    samples = read_metrics(path)
    assert requests(samples, "answered", 0) == 51
    assert value(samples, "ecr_kubelet_cache_hits_total") == 50
    assert value(samples, "ecr_kubelet_cache_misses_total") == 1
    assert len(stub.calls("ecr")) == 1
    assert sorted(p.name for p in metrics_dir.iterdir()) == [".ecr.prom.lock", "ecr.prom"]  # no temp file left


def test_the_docker_helper_counts_its_gets_from_the_environment(
    provider_cmd: list[str], provider_env: dict[str, str], stub: StubClient, metrics_dir: Path, tmp_path: Path
) -> None:
    helper = install_docker_helper(provider_cmd, tmp_path / "bin")
    path = metrics_dir / "ecr.prom"
    env = {**provider_env, "ECR_KUBELET_METRICS_FILE": str(path)}

    def get(server: str) -> int:
        return subprocess.run([str(helper), "get"], input=server, env=env, capture_output=True, text=True,
                              timeout=60, check=False).returncode

    assert (get(HOST), get(HOST), get("ghcr.io")) == (0, 0, 1)
    samples = read_metrics(path)
    assert requests(samples, "answered", 0, "docker-helper") == 2
    assert requests(samples, "no_credentials", 1, "docker-helper") == 1
    assert value(samples, "ecr_kubelet_cache_hits_total") == 1


@pytest.mark.parametrize("problem", ["group-writable directory", "symlink at the file", "no such directory",
                                     "directory owned by another user", "file is a directory",
                                     "directory reached through a symlink others can replace"])
def test_an_unsafe_or_broken_metrics_path_never_fails_a_pull(
    run_provider: RunProvider, stub: StubClient, metrics_dir: Path, tmp_path: Path, problem: str
) -> None:
    path = metrics_dir / "ecr.prom"
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    if problem == "group-writable directory":
        metrics_dir.chmod(0o775)
    elif problem == "symlink at the file":
        path.symlink_to(target)
    elif problem == "no such directory":
        path = tmp_path / "missing" / "ecr.prom"
    elif problem == "directory owned by another user":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the directory away")
        os.chown(metrics_dir, 65534, 65534)
    elif problem == "file is a directory":
        path.mkdir()
    else:  # whoever may write the link's directory chooses where root writes (tests/trust_cases.py has more)
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        (shared / "link").symlink_to(metrics_dir)
        path = shared / "link" / "ecr.prom"
    result = run_provider(make_request(f"{HOST}/app"), "--metrics-file", str(path))
    assert result.returncode == 0 and json.loads(result.stdout)["auth"][HOST]["password"]
    [line] = result.stderr.splitlines()
    assert line.startswith("ecr-credential-provider: WARNING: metrics file ") and "not updated" in line
    assert target.read_text() == "precious\n"
    assert not (metrics_dir / "ecr.prom").is_file() or problem == "symlink at the file"
    assert [p.name for p in metrics_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_a_corrupt_file_keeps_the_series_it_can_read(
    run_provider: RunProvider, stub: StubClient, metrics_dir: Path
) -> None:
    path = metrics_dir / "ecr.prom"
    path.write_text('ecr_kubelet_cache_hits_total 7\ngarbage{ line\nother_metric 3\n'
                    'ecr_kubelet_cache_misses_total NaN\n')
    assert run_provider(make_request(f"{HOST}/app"), "--metrics-file", str(path)).returncode == 0
    samples = read_metrics(path)
    assert value(samples, "ecr_kubelet_cache_hits_total") == 7
    assert value(samples, "ecr_kubelet_cache_misses_total") == 1
    assert "other_metric" not in path.read_text()


def test_a_cache_hit_with_metrics_loads_no_heavy_module(
    provider_env: dict[str, str], stub: StubClient, metrics_dir: Path
) -> None:
    script = Path(sys.executable).parent / "ecr-credential-provider"
    env = {**provider_env, "ECR_KUBELET_METRICS_FILE": str(metrics_dir / "ecr.prom"), "PYTHONPROFILEIMPORTTIME": "1"}
    request = json.dumps(make_request(f"{HOST}/app")) + "\n"
    modules: set[str] = set()
    for _ in range(2):  # the second is the hit
        result = subprocess.run([str(script)], input=request, env=env, capture_output=True, text=True, timeout=60,
                                check=False)
        assert result.returncode == 0
        modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
                   if line.startswith("import time:")}
    assert len(stub.calls()) == 1 and "ecr_kubelet.metrics" in modules
    heavy = {m for m in modules if m.split(".")[0] in {"botocore", "pydantic", "prometheus_client", "urllib3"}}
    assert heavy == set()


def test_rendered_text_round_trips_through_the_real_parser() -> None:
    series: dict[Any, float] = {
        ("ecr_kubelet_aws_calls_total", (("service", "ecr"), ("operation", "Get"), ("result", "client_error"),
                                         ("code", 'we"ird\\co\nde'))): 3,
        ("ecr_kubelet_last_success_timestamp_seconds", ()): 1764579000.25,
    }
    text = metrics.render(series)
    assert metrics.parse(text) == series
    [calls, last] = list(text_string_to_metric_families(text))
    assert calls.samples[0].labels["code"] == 'we"ird\\co\nde' and calls.samples[0].value == 3
    assert last.type == "gauge" and last.samples[0].value == 1764579000.25


def test_the_module_loads_neither_logging_nor_pathlib() -> None:
    """A run with metrics pays for neither (logging alone is about a quarter of a cache hit)."""
    code = "import sys, ecr_kubelet.metrics; print(sorted({'logging', 'pathlib'} & set(sys.modules)))"
    src = str(Path(metrics.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out == "[]\n"


def test_a_held_metrics_lock_never_delays_the_answer_at_the_deadline(
    run_provider: RunProvider, stub: StubClient, provider_env: dict[str, str], metrics_dir: Path, tmp_path: Path
) -> None:
    # A refresh hangs in something that ignores the deadline (a credential_process), so the backstop answers
    # with the still-valid cached token; another run holds the metrics file's lock all along. The answer
    # comes at the deadline, and the counting waits no longer than what is left of it.
    import fcntl

    script = tmp_path / "creds.sh"
    script.write_text('#!/bin/sh\necho \'{"Version":1,"AccessKeyId":"AKIAPROCESSKEY000001","SecretAccessKey":"s"}\'\n')
    script.chmod(0o700)
    config = tmp_path / "config"
    config.write_text(f"[default]\ncredential_process = {script}\n")
    config.chmod(0o600)
    env = {k: v for k, v in provider_env.items() if not k.startswith("AWS_ACCESS") and k != "AWS_SECRET_ACCESS_KEY"}
    env["AWS_CONFIG_FILE"] = str(config)
    image = make_request(f"{HOST}/app")
    path = metrics_dir / "ecr.prom"
    first = run_provider(image, "--metrics-file", str(path), env=env)
    assert first.returncode == 0, first.stderr
    cached = json.loads(first.stdout)["auth"][HOST]["password"]
    for entry in Path(env["ECR_KUBELET_CACHE_DIR"]).glob("*.json"):  # past its refresh point, still valid
        data = json.loads(entry.read_bytes())
        data["fetched_at"] -= 7 * 3600
        data["expires_at"] -= 7 * 3600
        entry.write_text(json.dumps(data))
    script.write_text("#!/bin/sh\nexec sleep 30\n")  # same identity (the config is unchanged); now it hangs
    lock = os.open(metrics_dir / ".ecr.prom.lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        result = run_provider(image, "--metrics-file", str(path), "--timeout", "4s", env=env)
        took = time.monotonic() - started
    finally:
        os.close(lock)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["auth"][HOST]["password"] == cached
    assert took < 4 + metrics.LOCK_TIMEOUT  # the metrics lock's own 10 s wait would come on top
    assert "not updated" in result.stderr and cached not in result.stderr

# ---- the lock: bounded by the caller's deadline (in process) -----------------------------------------


@pytest.mark.parametrize(("given", "waited"), [(3.25, 3.25), (0.0, 0.0), (-2.0, -2.0), (60.0, metrics.LOCK_TIMEOUT)])
def test_the_lock_wait_is_bounded_by_the_callers_remaining_deadline(
    metrics_dir: Path, monkeypatch: pytest.MonkeyPatch, given: float, waited: float
) -> None:
    from ecr_kubelet import private_files

    timeouts: list[float] = []

    def wait_runs_out(_fd: int, timeout: float, **_kwargs: Any) -> bool:
        timeouts.append(timeout)
        return False

    monkeypatch.setattr(private_files, "lock", wait_runs_out)
    with pytest.raises(metrics.MetricsError, match="held by another run"):
        metrics.update(metrics_dir / "ecr.prom", {}, True, 1.0, lock_timeout=given)
    assert timeouts == [waited]
    assert not (metrics_dir / "ecr.prom").exists()


def test_a_held_lock_with_no_time_left_is_a_warning_at_once(
    metrics_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import fcntl

    from ecr_kubelet.observe import Observer

    holder = os.open(metrics_dir / ".ecr.prom.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        metrics.record(metrics_dir / "ecr.prom", Observer(), "kubelet", 0, lock_timeout=0.0)  # never raises
    finally:
        os.close(holder)
    assert "not updated" in caplog.text and "held by another run" in caplog.text
    assert not (metrics_dir / "ecr.prom").exists()
