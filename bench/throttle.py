#!/usr/bin/env python3
"""One node while ECR throttles: how many GetAuthorizationToken calls, and how long every run takes.

The kubelet starts one plugin run per image, so a node booting pods with several images of one
registry starts that many runs at once; a CI runner's parallel jobs do the same with the Docker
helper. Against ``tests/stub_server.py`` (one cache directory, as on one node):

* ``lone``: one kubelet run while every call is throttled (it retries until its deadline);
* ``storm``: N concurrent kubelet runs (one per image of one registry) while every call is throttled;
* ``lifts``: N concurrent kubelet runs while the first 5 calls are throttled;
* ``helper``: N parallel ``docker-credential-ecr-login get`` while every call is throttled;
* ``helper-lifts``: the same while the first 10 calls are throttled.

Reported per scenario: API calls, runs answered, the slowest run's wall time, and the most stderr
lines (kubelet mode) any failing run printed. ``--go`` adds the official Go provider to the kubelet
scenarios, ``--amazon-helper PATH`` Amazon's helper to the helper ones, in the same run.

    .venv/bin/python bench/throttle.py [--runs 10] [--go] [--amazon-helper PATH]

Standard library only; writes ``bench/results/throttle-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fleet import GO_BINARY, REGISTRY, RESULTS, Stub, log

KILL_AFTER = 60.0  # the kubelet's limit for one plugin run


def env_for(stub_url: str, home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
        "TMPDIR": tempfile.gettempdir(),
        "AWS_ACCESS_KEY_ID": "AKIATHROTTLEBENCH001", "AWS_SECRET_ACCESS_KEY": "benchSECRET/not-a-secret",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "no-config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_ENDPOINT_URL_ECR": stub_url, "AWS_ENDPOINT_URL_ECR_PUBLIC": stub_url, "AWS_ENDPOINT_URL_STS": stub_url,
        "ECR_KUBELET_CACHE_DIR": str(home / "cache"), "AWS_ECR_CACHE_DIR": str(home / "helper-cache"),
        "ECR_KUBELET_RUNTIME_DIR": str(home / "runtime"),
    }


def run_all(cmds: Sequence[Sequence[str]], inputs: Sequence[bytes], env: dict[str, str]) -> list[dict[str, Any]]:
    """Start every command, then hand each its input at once; wait (the kubelet kills at 60 s)."""
    start = time.monotonic()
    procs = [subprocess.Popen(list(cmd), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for cmd in cmds]
    for proc, data in zip(procs, inputs, strict=True):
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()
        proc.stdin = None  # handed over: communicate() below only reads
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(0.1, KILL_AFTER - (time.monotonic() - start)))
            code: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            code = "killed at 60 s"
        results.append({"code": code, "seconds": round(time.monotonic() - start, 1), "stdout": out,
                        "stderr_lines": len(err.decode("utf-8", "replace").splitlines())})
    return results


def scenario(name: str, subject: str, cmds: Sequence[Sequence[str]], inputs: Sequence[bytes],
             stub: Stub, base: Path, throttle: int, helper: bool) -> dict[str, Any]:
    stub.call("POST", "/_stub/reset")
    stub.call("POST", "/_stub/config", {"throttle_next": throttle})
    home = base / f"{name}-{subject}"
    home.mkdir()
    results = run_all(cmds, inputs, env_for(stub.url, home))
    calls = [c for c in stub.call("GET", "/_stub/calls") if c.get("action") == "GetAuthorizationToken"]
    answered = sum(1 for r in results if r["code"] == 0 and (helper or json.loads(r["stdout"]).get("auth")))
    failed_lines = [r["stderr_lines"] for r in results if r["code"] != 0]
    row = {"scenario": name, "subject": subject, "runs": len(cmds), "answered": answered, "api_calls": len(calls),
           "slowest_run_s": max(r["seconds"] for r in results),
           "exit_codes": sorted({str(r["code"]) for r in results}),
           "most_stderr_lines_of_a_failed_run": max(failed_lines) if failed_lines and not helper else None}
    print(f"{name:13} {subject:8} runs {row['runs']:2}  answered {answered:2}  API calls {len(calls):3}  slowest "
          f"{row['slowest_run_s']:5.1f}s  exit {','.join(row['exit_codes'])}"
          + (f"  stderr lines of a failed run <= {row['most_stderr_lines_of_a_failed_run']}"
             if row["most_stderr_lines_of_a_failed_run"] is not None else ""), flush=True)
    return row


def kubelet_request(image: str) -> bytes:
    return json.dumps({"kind": "CredentialProviderRequest", "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                       "image": image}).encode() + b"\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10, help="concurrent runs (default 10)")
    parser.add_argument("--provider", default=str(Path(sys.executable).parent / "ecr-credential-provider"),
                        help="our provider executable (default: the installed console script)")
    parser.add_argument("--go", action="store_true", help=f"also the Go provider ({GO_BINARY})")
    parser.add_argument("--amazon-helper", type=Path, help="also Amazon's docker-credential-ecr-login at PATH")
    parser.add_argument("--output", type=Path, default=RESULTS / "throttle-latest.json")
    args = parser.parse_args(argv)

    forever = 10**6
    kubelet_subjects = [("ours", [args.provider])]
    if args.go:
        kubelet_subjects.append(("go", [str(GO_BINARY)]))
    report: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
                              "cpus": os.cpu_count(), "load_before": os.getloadavg()[0], "rows": []}
    stub = Stub()
    with tempfile.TemporaryDirectory(prefix="ecr-throttle-") as tmp:
        base = Path(tmp)
        helper_bin = base / "bin"
        helper_bin.mkdir()
        (helper_bin / "docker-credential-ecr-login").symlink_to(args.provider)
        helper_subjects = [("ours", [str(helper_bin / "docker-credential-ecr-login"), "get"])]
        if args.amazon_helper:
            helper_subjects.append(("amazon", [str(args.amazon_helper), "get"]))
        try:
            rows = report["rows"]
            images = [kubelet_request(f"{REGISTRY}/team/app-{i}") for i in range(args.runs)]
            for subject, cmd in kubelet_subjects:
                rows.append(scenario("lone", subject, [cmd], images[:1], stub, base, forever, False))
                rows.append(scenario("storm", subject, [cmd] * args.runs, images, stub, base, forever, False))
                rows.append(scenario("lifts", subject, [cmd] * args.runs, images, stub, base, 5, False))
            server = [f"https://{REGISTRY}".encode()] * args.runs
            for subject, cmd in helper_subjects:
                rows.append(scenario("helper", subject, [cmd] * args.runs, server, stub, base, forever, True))
                rows.append(scenario("helper-lifts", subject, [cmd] * args.runs, server, stub, base, 10, True))
        finally:
            stub.stop()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
