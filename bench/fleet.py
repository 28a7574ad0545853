#!/usr/bin/env python3
"""A fleet booting at once against ECR's GetAuthorizationToken quota, at one tenth of the real scale.

ECR allows 20 calls/s with a burst of 200 per account and region, for the whole fleet. Here: N nodes
(default 120), each with its own identity (access key id) and its own token cache, all in one
account and region, start together against ``tests/stub_server.py`` enforcing 2 calls/s with a burst
of 20 (``rate_limit``). Each node boots pods with K images of the one registry (``--images``, default
1,3,5: one fleet run for each K). The kubelet de-duplicates plugin runs per image, not per registry,
so each node starts K runs at once, and for each image behaves like its kubelet: it runs the provider;
when the run fails (non-zero exit, or killed at the kubelet's 60 s), it runs it again after the
kubelet's image-pull back-off (10 s, 20 s, 40 s, ...). Reported per K: the share of nodes that have
credentials for all K images within 60 s / 120 s of the fleet start, the time until a node has them
all, the API calls per node, and the run wall times.

    python bench/fleet.py                       # ours (the installed console script), 120 nodes, K = 1, 3, 5
    python bench/fleet.py --go --images 3       # also the official Go provider (built by bench/run.py)
    python bench/fleet.py --provider PATH --nodes 120 --rate 2 --burst 20

All nodes run on this one machine, so their start-up competes for its CPUs (a real fleet has one
node per machine); the numbers are therefore a pessimistic model for a CPU-bound provider.
Standard library only; writes ``bench/results/fleet-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GO_BINARY = ROOT / "build" / "bench" / "go" / "v1.37.0" / "bin" / "ecr-credential-provider"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
KUBELET_TIMEOUT = 60.0
BACKOFF = (10.0, 20.0, 40.0, 80.0, 160.0, 300.0)  # the kubelet's image pull back-off


def log(msg: str) -> None:
    print(f"fleet: {msg}", file=sys.stderr, flush=True)


class Stub:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "stub_server.py"), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.proc.kill()
            raise RuntimeError(f"stub did not start ({self.url!r})")

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        import urllib.request

        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 (loopback)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def node_env(stub_url: str, home: Path, index: int) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
        "TMPDIR": tempfile.gettempdir(),
        "AWS_ACCESS_KEY_ID": f"AKIAFLEETNODE{index:07d}", "AWS_SECRET_ACCESS_KEY": "fleetSECRET/not-a-secret",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "no-config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_ENDPOINT_URL_ECR": stub_url, "AWS_ENDPOINT_URL_ECR_PUBLIC": stub_url, "AWS_ENDPOINT_URL_STS": stub_url,
        "ECR_KUBELET_CACHE_DIR": str(home / "cache"),
        "ECR_KUBELET_RUNTIME_DIR": str(home.parent / "runtime"),
    }


def run_node(cmd: Sequence[str], env: dict[str, str], images: int, start: float, horizon: float,
             result: dict[str, Any]) -> None:
    """One node's kubelet: one pull loop per image, all started at once."""
    pulls: list[dict[str, Any]] = [{} for _ in range(images)]
    threads = [threading.Thread(target=run_image, args=(cmd, env, f"{REGISTRY}/team/app-{i}", start, horizon, pulls[i]))
               for i in range(images)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result["runs"] = [run for pull in pulls for run in pull["runs"]]
    served = [pull["served_at"] for pull in pulls]
    result["first_runs_ok"] = sum(1 for pull in pulls if pull["runs"] and pull["runs"][0]["ok"])
    result["served_at"] = None if None in served else max(served)  # when the node has all its images' credentials


def run_image(cmd: Sequence[str], env: dict[str, str], image: str, start: float, horizon: float,
              result: dict[str, Any]) -> None:
    """The kubelet's pull of one image: run the provider until it answers with credentials, with the back-off."""
    request = json.dumps({"kind": "CredentialProviderRequest", "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                          "image": image}).encode() + b"\n"
    runs: list[dict[str, float]] = []
    while time.monotonic() - start < horizon:
        began = time.monotonic()
        proc = subprocess.Popen(list(cmd), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        try:
            out, _ = proc.communicate(request, timeout=KUBELET_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        ended = time.monotonic()
        try:
            ok = proc.returncode == 0 and bool(json.loads(out).get("auth"))
        except ValueError:
            ok = False
        runs.append({"start": round(began - start, 2), "end": round(ended - start, 2), "ok": ok})
        if ok:
            break
        pause = BACKOFF[min(len(runs) - 1, len(BACKOFF) - 1)]
        time.sleep(max(0.0, min(pause, horizon - (time.monotonic() - start))))
    result["runs"] = runs
    result["served_at"] = next((r["end"] for r in runs if r["ok"]), None)


def fleet(cmd: Sequence[str], nodes: int, images: int, rate: float, burst: int, horizon: float) -> dict[str, Any]:
    stub = Stub()
    wall_start = time.time()
    base = Path(tempfile.mkdtemp(prefix="ecr-fleet-"))
    try:
        stub.call("POST", "/_stub/config", {"rate_limit": {"rate": rate, "burst": burst}})
        results: list[dict[str, Any]] = [{} for _ in range(nodes)]
        envs = []
        for i in range(nodes):
            home = base / f"node-{i}"
            home.mkdir(parents=True)
            envs.append(node_env(stub.url, home, i))
        start = time.monotonic()
        wall_start = time.time()
        threads = [threading.Thread(target=run_node, args=(cmd, envs[i], images, start, horizon, results[i]))
                   for i in range(nodes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        calls = stub.call("GET", "/_stub/calls")
    finally:
        stub.stop()
        shutil.rmtree(base, ignore_errors=True)
    served = [r["served_at"] for r in results if r["served_at"] is not None]
    first = sum(1 for r in results if r["first_runs_ok"] == images)
    durations = sorted(run["end"] - run["start"] for r in results for run in r["runs"])
    ecr = [c for c in calls if c.get("action") == "GetAuthorizationToken"]
    per_node = sorted(sum(1 for c in ecr if c["access_key_id"] == env["AWS_ACCESS_KEY_ID"]) for env in envs)
    return {
        "nodes": nodes, "images_per_node": images, "rate": rate, "burst": burst,
        "served_first_run_pct": round(100 * first / nodes, 1),
        "served_within_60s_pct": round(100 * sum(1 for t in served if t <= 60) / nodes, 1),
        "served_within_120s_pct": round(100 * sum(1 for t in served if t <= 120) / nodes, 1),
        "served_pct": round(100 * len(served) / nodes, 1),
        "all_images_seconds_median": percentile(sorted(served), 0.5),
        "all_images_seconds_p95": percentile(sorted(served), 0.95),
        "runs": sum(len(r["runs"]) for r in results),
        "api_calls": len(ecr),
        "api_calls_ok": len([c for c in ecr if c["status"] == 200]),
        "api_calls_per_node_median": per_node[len(per_node) // 2],
        "api_calls_per_node_max": per_node[-1],
        "run_seconds_median": round(durations[len(durations) // 2], 1) if durations else None,
        "run_seconds_max": round(durations[-1], 1) if durations else None,
        "served_at": sorted(served),
        # when the quota was used: the stub's successful calls, seconds after the fleet start
        "quota_used_at": sorted(round(c["time"] - wall_start, 2) for c in calls
                                if c.get("action") == "GetAuthorizationToken" and c["status"] == 200),
        "first_call_at": sorted(round(min(c["time"] for c in calls if c["access_key_id"] == key) - wall_start, 2)
                                for key in {c["access_key_id"] for c in calls}),
    }


def percentile(values: Sequence[float], share: float) -> float | None:
    """The value below which `share` of the (sorted) values lie; None for none."""
    if not values:
        return None
    return round(values[min(len(values) - 1, int(share * len(values)))], 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=120)
    parser.add_argument("--images", default="1,3,5",
                        help="images of the one registry each node pulls at boot; one fleet run per value")
    parser.add_argument("--rate", type=float, default=2.0, help="quota: calls per second (default 2)")
    parser.add_argument("--burst", type=int, default=20, help="quota: burst (default 20)")
    parser.add_argument("--horizon", type=float, default=120.0, help="seconds to model (default 120)")
    parser.add_argument("--provider", default=str(Path(sys.executable).parent / "ecr-credential-provider"),
                        help="our provider executable (default: the installed console script)")
    parser.add_argument("--go", action="store_true", help=f"also the Go provider ({GO_BINARY})")
    parser.add_argument("--no-ours", action="store_true", help="only the Go provider")
    parser.add_argument("--output", type=Path, default=RESULTS / "fleet-latest.json")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
                              "cpus": os.cpu_count(), "load_before": os.getloadavg()[0],
                              "provider": args.provider}
    subjects = [] if args.no_ours else [("ours", [args.provider])]
    if args.go:
        if not GO_BINARY.exists():
            log(f"{GO_BINARY} is missing: run python bench/run.py once to build it")
            return 1
        subjects.append(("go", [str(GO_BINARY)]))
    for images in (int(k) for k in args.images.split(",")):
        for name, cmd in subjects:  # ours and Go's in the same run, one after the other, for each K
            log(f"{name}: {args.nodes} nodes x {images} images, quota {args.rate:g}/s burst {args.burst}, "
                f"{args.horizon:g}s")
            r = fleet(cmd, args.nodes, images, args.rate, args.burst, args.horizon)
            report.setdefault(name, {})[f"images={images}"] = r
            print(f"{name:4} K={images} all images within 60 s {r['served_within_60s_pct']:5.1f}%  within 120 s "
                  f"{r['served_within_120s_pct']:5.1f}%  first runs {r['served_first_run_pct']:5.1f}%  time to all "
                  f"median {r['all_images_seconds_median']}s p95 {r['all_images_seconds_p95']}s  API calls "
                  f"{r['api_calls']} ({r['api_calls_ok']} ok), per node median {r['api_calls_per_node_median']} "
                  f"max {r['api_calls_per_node_max']}  run median {r['run_seconds_median']}s max "
                  f"{r['run_seconds_max']}s", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
