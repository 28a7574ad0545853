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
all, the API calls per node (and per second: how the quota was used), the run wall times and the
providers' CPU.

    python bench/fleet.py                       # ours (the installed console script), 120 nodes, K = 1, 3, 5
    python bench/fleet.py --go --images 3       # also the official Go provider (built by bench/run.py)
    python bench/fleet.py --provider PATH --nodes 120 --rate 2 --burst 20 --model cpu-fair

All nodes run on this one machine, where a real fleet has one machine per node. Two models, both
providers alike (``--model``, default both): ``at-once``, every node boots at t=0, so 120 nodes'
start-ups share this machine's CPUs (a Python provider's first calls then come tens of seconds late,
while the quota's bucket sits full: a model of the CPUs as much as of the quota); and ``cpu-fair``,
at most ``--boot-slots`` nodes in their start-up at a time (see Admission), times still counted from
the fleet start. The release binary's bundle is unpacked once before the clock starts, as the
installers do.

Standard library only; writes ``bench/results/fleet-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
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

    def cpu_seconds(self) -> float:
        """The stub's CPU so far (user + system), from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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
             result: dict[str, Any], admission: Admission | None = None) -> None:
    """One node's kubelet: one pull loop per image, all started at once (once admitted, see Admission)."""
    slot = admission is not None and admission.enter(start + horizon)
    result["boot_at"] = round(time.monotonic() - start, 2)
    pulls: list[dict[str, Any]] = [{"first_ended": threading.Event()} for _ in range(images)]
    threads = [threading.Thread(target=run_image, args=(cmd, env, f"{REGISTRY}/team/app-{i}", start, horizon, pulls[i]))
               for i in range(images)]
    for thread in threads:
        thread.start()
    if admission is not None:
        while not admission.started(env["AWS_ACCESS_KEY_ID"],
                                    lambda: all(pull["first_ended"].is_set() for pull in pulls)):
            time.sleep(0.01)
        admission.leave(slot)
    for thread in threads:
        thread.join()
    result["runs"] = [run for pull in pulls for run in pull["runs"]]
    served = [pull["served_at"] for pull in pulls]
    result["first_runs_ok"] = sum(1 for pull in pulls if pull["runs"] and pull["runs"][0]["ok"])
    result["served_at"] = None if None in served else max(served)  # when the node has all its images' credentials


class Admission:
    """The CPU-fair model: at most `slots` nodes in their start-up at once, the same rule for every provider.

    Booted all at once, 120 nodes share this machine's CPUs with each other (and with the harness that
    starts them): every process gets 1/360th of them, so all of a Python provider's runs finish their
    start-up together, tens of seconds late, while the quota's bucket sits full, where each real node,
    on its own CPUs, calls within a second. Here a node boots (starts its K runs) when a slot is free
    and holds it until the stub has seen a call from it or its first runs have all ended: its start-up
    is over. Times still count from the fleet's start, so the wait for a slot counts against the
    provider: a pessimistic model of a real fleet, not a flattering one. Too few slots, and nodes boot
    more slowly than the quota serves them (the model then measures the harness); too many, and it
    turns into the at-once model.
    """

    def __init__(self, stub: Stub, slots: int, nodes: int) -> None:
        self._stub = stub
        self._slots = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self._seen: frozenset[str] = frozenset()
        self._booting = nodes
        self._done = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._done.wait(0.02):  # until every node's start-up is over
            seen = frozenset(self._stub.call("GET", "/_stub/callers"))
            with self._lock:
                self._seen = seen

    def enter(self, until: float) -> bool:
        """Wait for a slot, at most until the model's horizon; whether the node has it."""
        return self._slots.acquire(timeout=max(0.0, until - time.monotonic()))

    def started(self, access_key_id: str, first_runs_ended: Callable[[], bool]) -> bool:
        with self._lock:
            return access_key_id in self._seen or first_runs_ended()

    def leave(self, slot: bool) -> None:
        if slot:
            self._slots.release()
        with self._lock:
            self._booting -= 1
            if self._booting == 0:
                self._done.set()

    def stop(self) -> None:
        self._done.set()
        self._poller.join()


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
        result["first_ended"].set()
        if ok:
            break
        pause = BACKOFF[min(len(runs) - 1, len(BACKOFF) - 1)]
        time.sleep(max(0.0, min(pause, horizon - (time.monotonic() - start))))
    result["first_ended"].set()  # also when booted too late to run at all
    result["runs"] = runs
    result["served_at"] = next((r["end"] for r in runs if r["ok"]), None)


def fleet(cmd: Sequence[str], nodes: int, images: int, rate: float, burst: int, horizon: float,
          boot_slots: int = 0) -> dict[str, Any]:
    stub = Stub()
    admission: Admission | None = None
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
        # As an installed node has it (the installers run --version once): the release binary's launcher has
        # unpacked its bundle before the first pull. Cold, 360 launchers racing to unpack on this machine's
        # CPUs time out on the unpack lock (10 s) and each unpack a private copy: the model would measure that.
        subprocess.run([*cmd, "--version"], env=envs[0], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60, check=False)
        cpu_before = _children_cpu()
        if boot_slots:
            admission = Admission(stub, boot_slots, nodes)
        start = time.monotonic()
        wall_start = time.time()
        threads = [threading.Thread(target=run_node, args=(cmd, envs[i], images, start, horizon, results[i],
                                                           admission))
                   for i in range(nodes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        calls = stub.call("GET", "/_stub/calls")
        wall = time.monotonic() - start
        stub_cpu = stub.cpu_seconds()
    finally:
        if admission is not None:
            admission.stop()
        stub.stop()
        shutil.rmtree(base, ignore_errors=True)
    served = [r["served_at"] for r in results if r["served_at"] is not None]
    first = sum(1 for r in results if r["first_runs_ok"] == images)
    durations = sorted(run["end"] - run["start"] for r in results for run in r["runs"])
    ecr = [c for c in calls if c.get("action") == "GetAuthorizationToken"]
    per_node = sorted(sum(1 for c in ecr if c["access_key_id"] == env["AWS_ACCESS_KEY_ID"]) for env in envs)
    # The providers' CPU (this process's reaped children, less the stub's): what 120 nodes would each
    # spend on their own machines, here shared by this one's CPUs.
    provider_cpu = _children_cpu() - cpu_before - stub_cpu
    per_second = [[0, 0] for _ in range(int(horizon) + 1)]
    for c in ecr:
        second = int(c["time"] - wall_start)
        if 0 <= second < len(per_second):
            per_second[second][0] += 1
            per_second[second][1] += c["status"] == 200
    return {
        "nodes": nodes, "images_per_node": images, "rate": rate, "burst": burst,
        "model": f"cpu-fair, {boot_slots} nodes booting at a time" if boot_slots else "at once",
        "last_boot_at": max(r["boot_at"] for r in results),
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
        "wall_seconds": round(wall, 1),
        "provider_cpu_seconds": round(provider_cpu, 1),
        "provider_cpu_seconds_per_run": round(provider_cpu / max(1, sum(len(r["runs"]) for r in results)), 3),
        "stub_cpu_seconds": round(stub_cpu, 1),
        # [attempts, successes] of GetAuthorizationToken in each second after the fleet start
        "calls_per_second": per_second,
        "served_at": sorted(served),
        # when the quota was used: the stub's successful calls, seconds after the fleet start
        "quota_used_at": sorted(round(c["time"] - wall_start, 2) for c in calls
                                if c.get("action") == "GetAuthorizationToken" and c["status"] == 200),
        "first_call_at": sorted(round(min(c["time"] for c in calls if c["access_key_id"] == key) - wall_start, 2)
                                for key in {c["access_key_id"] for c in calls}),
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
    parser.add_argument("--model", default="at-once,cpu-fair",
                        help="at-once (every node boots at t=0), cpu-fair (at most --boot-slots nodes in their "
                             "start-up at a time, see Admission), or both, comma-separated")
    parser.add_argument("--boot-slots", type=int, default=4 * (os.cpu_count() or 1),
                        help="cpu-fair: nodes in their start-up at once (default: 4 per CPU)")
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
    models = args.model.split(",")
    if not set(models) <= {"at-once", "cpu-fair"}:
        parser.error("--model: at-once, cpu-fair or both")
    for images in (int(k) for k in args.images.split(",")):
        for model in models:
            for name, cmd in subjects:  # ours and Go's in the same run, one after the other, for each K
                load = os.getloadavg()  # the machine's, just before: other jobs compete for the CPUs
                log(f"{name}: {args.nodes} nodes x {images} images, {model}, quota {args.rate:g}/s burst "
                    f"{args.burst}, {args.horizon:g}s, load {load[0]:.1f}")
                r = fleet(cmd, args.nodes, images, args.rate, args.burst, args.horizon,
                          args.boot_slots if model == "cpu-fair" else 0)
                r["load_before"], r["load_after"] = load, os.getloadavg()
                report.setdefault(name, {})[f"images={images}" + (",cpu-fair" if model == "cpu-fair" else "")] = r
                print(f"{name:4} K={images} {model:8} all images within 60 s {r['served_within_60s_pct']:5.1f}%  "
                      f"within 120 s {r['served_within_120s_pct']:5.1f}%  "
                      f"first runs {r['served_first_run_pct']:5.1f}%  "
                      f"time to all median {r['all_images_seconds_median']}s p95 {r['all_images_seconds_p95']}s  "
                      f"API calls {r['api_calls']} ({r['api_calls_ok']} ok), per node median "
                      f"{r['api_calls_per_node_median']} max {r['api_calls_per_node_max']}  first call "
                      f"{r['first_call_at'][0] if r['first_call_at'] else None}s, last node booted "
                      f"{r['last_boot_at']}s  provider CPU {r['provider_cpu_seconds']}s "
                      f"({r['provider_cpu_seconds_per_run']}s/run) in {r['wall_seconds']}s", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
