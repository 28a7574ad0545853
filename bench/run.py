#!/usr/bin/env python3
"""Cold-start benchmark: our binary vs. a PyInstaller hello-world floor vs. the Go provider.

One command builds what is missing, runs everything against the local AWS stub
(``tests/stub_server.py``), prints a table and writes ``bench/results/latest.json``::

    python bench/run.py                 # build what is missing, 15 runs per row, storm of 50
    python bench/run.py -n 30 --storm 50 --rebuild

Rows: the floor (hello-world one-file built with the same spec and flags), our binary (the
unpack-once launcher) on its first run (fresh runtime dir every run: unpack, then a cache hit), on
a cache hit and on a cache miss (fresh cache dir every run) with the bundle already unpacked, the
same code as a classic PyInstaller one-file build (``build-binary --onefile``, for comparison;
``--no-onefile`` skips it), the installed console script (plain Python,
for reference) on hit and miss, and the official Go provider (pinned version, built with
``go install``; it has no cache, so every run calls the API). Each run is timed from spawn to
reap; CPU time (user+sys) and peak RSS come from ``os.wait4`` of the child, which on Linux
include the descendants it reaped (the one-file bootloader waits for its Python child; the
launcher execs, so it has none).
Runs of the different rows are interleaved so background load hits them alike.

The boot storm starts N concurrent cold invocations for N different images of ONE registry,
sharing one empty cache dir and one empty runtime dir (the launcher unpacks once for all), with
the stub answering after ``--storm-delay`` seconds, and counts the ``GetAuthorizationToken`` calls
the stub received and the failed invocations.

Standard library only (it runs before anything is installed, with any python3 >= 3.10).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
RESULTS = ROOT / "bench" / "results"
SPEC = ROOT / "packaging" / "ecr-credential-provider.spec"
OUR_BINARY = ROOT / "dist" / "ecr-credential-provider"
ONEFILE_DIST = BUILD / "onefile"
GO_MODULE = "k8s.io/cloud-provider-aws/cmd/ecr-credential-provider"
GO_VERSION = "v1.37.0"  # builds from the module proxy with Go 1.26; honours AWS_ENDPOINT_URL_<SERVICE>
ACCOUNT = "123456789012"
REGISTRY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
API_V1 = "credentialprovider.kubelet.k8s.io/v1"

TARGETS = {
    "binary_size_mb": 20.0,
    "hit_vs_floor": 1.5,
    "miss_vs_floor": 2.5,
    "peak_rss_mb": 60.0,
    "storm_api_calls": 1,
    "storm_failures": 0,
}


def request_bytes(image: str) -> bytes:
    req = {"kind": "CredentialProviderRequest", "apiVersion": API_V1, "image": image}
    return (json.dumps(req, separators=(",", ":")) + "\n").encode()


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---- building -------------------------------------------------------------------------------------


def venv_python() -> str:
    candidate = ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def build_ours(python: str, rebuild: bool) -> str | None:
    if OUR_BINARY.exists() and not rebuild:
        return None
    log("building dist/ecr-credential-provider (scripts/build-binary)")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-binary"), "--python", python],
        capture_output=True, text=True, timeout=900, check=False,
    )
    if proc.returncode != 0:
        return f"scripts/build-binary failed: {proc.stderr.strip()[-400:]}"
    return None


def build_onefile(python: str, rebuild: bool) -> tuple[Path | None, str]:
    """The same code as a classic PyInstaller one-file build (scripts/build-binary --onefile)."""
    binary = ONEFILE_DIST / "ecr-credential-provider"
    if binary.exists() and not rebuild:
        return binary, ""
    log("building the one-file variant (scripts/build-binary --onefile)")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-binary"), "--python", python, "--onefile", "--no-check",
         "--dist", str(ONEFILE_DIST)],
        capture_output=True, text=True, timeout=900, check=False,
    )
    if proc.returncode != 0 or not binary.exists():
        return None, f"scripts/build-binary --onefile failed: {proc.stderr.strip()[-400:]}"
    return binary, ""


def build_floor(python: str, rebuild: bool) -> tuple[Path | None, str]:
    """Hello-world one-file built from the SAME spec (same excludes, strip, optimize, no UPX)."""
    info = subprocess.run(
        [python, "-c", "import sys, PyInstaller; print(sys.version.split()[0], PyInstaller.__version__)"],
        capture_output=True, text=True, check=False,
    )
    if info.returncode != 0:
        return None, f"PyInstaller not importable by {python}"
    key = hashlib.sha256(info.stdout.encode() + SPEC.read_bytes()).hexdigest()[:12]
    out_dir = BUILD / "floor" / key
    binary = out_dir / "dist" / "floor"
    if binary.exists() and not rebuild:
        return binary, ""
    log("building the hello-world floor binary with the same spec")
    out_dir.mkdir(parents=True, exist_ok=True)
    hello = out_dir / "hello.py"
    hello.write_text('import sys\nsys.stdout.write("hello\\n")\n', encoding="utf-8")
    env = dict(os.environ, ECR_KUBELET_PYI_ENTRY=str(hello), ECR_KUBELET_PYI_NAME="floor")
    proc = subprocess.run(
        [python, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "ERROR",
         "--distpath", str(out_dir / "dist"), "--workpath", str(out_dir / "work"), str(SPEC)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    if proc.returncode != 0:
        return None, f"floor build failed: {proc.stderr.strip()[-400:]}"
    return binary, ""


def build_go(version: str, rebuild: bool) -> tuple[Path | None, str]:
    gobin = BUILD / "go" / version / "bin"
    binary = gobin / "ecr-credential-provider"
    if binary.exists() and not rebuild:
        return binary, ""
    go = shutil.which("go")
    if go is None:
        return None, "Go toolchain not found on PATH"
    log(f"building the official provider: go install {GO_MODULE}@{version} (takes ~2 min the first time)")
    env = dict(os.environ, GOBIN=str(gobin), GOFLAGS="-buildvcs=false", CGO_ENABLED="0")
    try:
        proc = subprocess.run(
            [go, "install", "-trimpath", "-ldflags=-s -w", f"{GO_MODULE}@{version}"],
            env=env, capture_output=True, text=True, timeout=900, check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "go install timed out after 900 s"
    if proc.returncode != 0 or not binary.exists():
        return None, f"go install failed: {proc.stderr.strip()[-400:]}"
    return binary, ""


# ---- the stub -------------------------------------------------------------------------------------


class Stub:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "stub_server.py"), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http"):
            self.proc.kill()
            raise RuntimeError(f"stub server did not start (printed {line!r})")
        self.url = line

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 (loopback)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return json.loads(resp.read())

    def reset(self) -> None:
        self._call("POST", "/_stub/reset", {})

    def configure(self, **settings: Any) -> None:
        self._call("POST", "/_stub/config", settings)

    def token_calls(self) -> int:
        calls: list[dict[str, Any]] = self._call("GET", "/_stub/calls")
        return sum(1 for c in calls if c.get("action") == "GetAuthorizationToken")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def provider_env(stub_url: str, home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": tempfile.gettempdir(),
        # where the launcher unpacks its bundle (once); runs of the "first" rows get a fresh one
        "ECR_KUBELET_RUNTIME_DIR": str(home / "runtime"),
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "benchSECRET/wJalrXUtnFEMI/K7MDENG",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "no-such-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-such-aws-credentials"),
        "AWS_ENDPOINT_URL_ECR": stub_url,
        "AWS_ENDPOINT_URL_ECR_PUBLIC": stub_url,
        "AWS_ENDPOINT_URL_STS": stub_url,
    }


# ---- measuring ------------------------------------------------------------------------------------


@dataclass
class Sample:
    wall_ms: float
    cpu_ms: float
    maxrss_kb: int
    ok: bool


@dataclass
class Row:
    name: str
    command: list[str]
    notes: str = ""
    samples: list[Sample] = field(default_factory=list)
    size_bytes: int | None = None

    def summary(self) -> dict[str, Any]:
        good = [s for s in self.samples if s.ok]
        out: dict[str, Any] = {
            "name": self.name,
            "command": self.command,
            "notes": self.notes,
            "runs": len(self.samples),
            "failures": len(self.samples) - len(good),
            "size_bytes": self.size_bytes,
        }
        if good:
            walls = sorted(s.wall_ms for s in good)
            out.update(
                median_ms=round(statistics.median(walls), 1),
                p95_ms=round(percentile(walls, 95), 1),
                min_ms=round(walls[0], 1),
                cpu_ms=round(statistics.median(s.cpu_ms for s in good), 1),
                peak_rss_mb=round(max(s.maxrss_kb for s in good) / 1024, 1),
            )
        return out


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * pct / 100
    lo = int(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


def build_runner() -> tuple[Path | None, str]:
    """Compile bench/runner.c (spawns and reaps the measured command; see the comment in it)."""
    source = ROOT / "bench" / "runner.c"
    key = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    binary = BUILD / f"runner-{key}"
    if binary.exists():
        return binary, ""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None, "no C compiler: measuring from Python, so peak RSS includes the benchmark's own"
    BUILD.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([cc, "-O2", "-o", str(binary), str(source)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None, f"cc failed ({proc.stderr.strip()[-200:]}): peak RSS includes the benchmark's own"
    return binary, ""


def run_once(cmd: list[str], stdin: bytes, env: dict[str, str], expect_auth: bool,
             runner: Path | None) -> Sample:
    """Run once; wall time, CPU (user+sys) and peak RSS of the child and its reaped descendants."""
    with scratch() as tmp:
        inp, out = tmp / "stdin", tmp / "stdout"
        inp.write_bytes(stdin)
        if runner is not None:
            proc = subprocess.run([str(runner), str(inp), str(out), *cmd], env=env, capture_output=True,
                                  text=True, check=False)
            wall_ns, user_us, sys_us, maxrss_kb, code = (int(v) for v in proc.stdout.split())
            wall, cpu, rss = wall_ns / 1e6, (user_us + sys_us) / 1000, maxrss_kb
        else:
            with inp.open("rb") as fin, out.open("wb") as fout:
                start = time.perf_counter()
                child = subprocess.Popen(cmd, stdin=fin, stdout=fout, stderr=subprocess.DEVNULL, env=env)
                _, status, usage = os.wait4(child.pid, 0)
                wall = (time.perf_counter() - start) * 1000
                child.returncode = code = os.waitstatus_to_exitcode(status)
            cpu, rss = (usage.ru_utime + usage.ru_stime) * 1000, usage.ru_maxrss
        body = out.read_bytes() if out.exists() else b""
    ok = code == 0
    if ok and expect_auth:
        try:
            ok = bool(json.loads(body).get("auth"))
        except ValueError:
            ok = False
    return Sample(wall, cpu, rss, ok)


@contextmanager
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ecr-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def storm(
    cmd: list[str], env: dict[str, str], stub: Stub, n: int, delay: float, cache_dir: Path | None,
    runtime_dir: Path | None = None,
) -> dict[str, Any]:
    stub.reset()
    stub.configure(delay_seconds=delay)
    run_env = dict(env)
    if cache_dir is not None:
        run_env["ECR_KUBELET_CACHE_DIR"] = str(cache_dir)
    if runtime_dir is not None:
        run_env["ECR_KUBELET_RUNTIME_DIR"] = str(runtime_dir)
    procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
    failures = 0
    with ExitStack() as stack:
        start = time.perf_counter()
        for i in range(n):
            sink: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.DEVNULL, env=run_env)
            assert proc.stdin is not None
            proc.stdin.write(request_bytes(f"{REGISTRY}/team/app-{i}"))
            proc.stdin.close()
            procs.append((proc, sink))
        for proc, out in procs:
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            out.seek(0)
            try:
                ok = rc == 0 and bool(json.loads(out.read()).get("auth"))
            except ValueError:
                ok = False
            failures += 0 if ok else 1
        wall = (time.perf_counter() - start) * 1000
    calls = stub.token_calls()
    stub.reset()
    return {"invocations": n, "wall_ms": round(wall, 1), "api_calls": calls, "failures": failures,
            "stub_delay_s": delay}


# ---- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("-n", "--iterations", type=int, default=15, help="timed runs per row (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per row first (default 2)")
    parser.add_argument("--storm", type=int, default=50, help="concurrent invocations in the boot storm (0: skip)")
    parser.add_argument("--storm-delay", type=float, default=0.2,
                        help="seconds the stub waits before answering during the storm (default 0.2)")
    parser.add_argument("--go-version", default=GO_VERSION, help=f"official provider version (default {GO_VERSION})")
    parser.add_argument("--no-go", action="store_true", help="skip the Go provider")
    parser.add_argument("--no-python", action="store_true", help="skip the console-script (plain Python) rows")
    parser.add_argument("--no-onefile", action="store_true",
                        help="skip the rows of the classic one-file build of our code")
    parser.add_argument("--binary", default=os.environ.get("ECR_KUBELET_TEST_BINARY"),
                        help="binary to measure (default dist/ecr-credential-provider, built if missing)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild our binary and the floor")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="where to write results")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be >= 1")

    python = venv_python()
    notes: dict[str, str] = {}
    binary = Path(args.binary) if args.binary else OUR_BINARY
    if not args.binary:
        err = build_ours(python, args.rebuild)
        if err:
            notes["ours"] = err
    floor, floor_note = build_floor(python, args.rebuild)
    onefile, onefile_note = (None, "") if args.no_onefile else build_onefile(python, args.rebuild)
    if onefile_note:
        notes["onefile"] = onefile_note
    go_bin, go_note = (None, "skipped (--no-go)") if args.no_go else build_go(args.go_version, False)
    script = Path(python).parent / "ecr-credential-provider"
    runner, runner_note = build_runner()
    if runner_note:
        notes["runner"] = runner_note

    stub = Stub()
    rows: list[Row] = []
    storms: dict[str, Any] = {}
    try:
        with scratch() as tmp:
            home = tmp / "home"
            home.mkdir()
            env = provider_env(stub.url, home)
            req = request_bytes(f"{REGISTRY}/team/app")
            hit_cache = tmp / "hit-cache"

            # name, command, stdin, expect auth, env for each run (callable: fresh dir per run)
            plans: list[tuple[Row, bytes, bool, str]] = []
            if floor is not None:
                plans.append((Row("floor (hello-world one-file)", [str(floor)]), b"", False, "none"))
            else:
                notes["floor"] = floor_note
            if binary.exists():
                plans.append((Row("ours: first run (unpack)", [str(binary)], "fresh runtime dir per run, cache hit"),
                              req, True, "first"))
                plans.append((Row("ours: cache hit", [str(binary)]), req, True, "hit"))
                plans.append((Row("ours: cache miss", [str(binary)], "fresh cache dir per run"), req, True, "miss"))
            else:
                notes.setdefault("ours", f"{binary} not found")
            if onefile is not None:
                plans.append((Row("ours as one-file: cache hit", [str(onefile)]), req, True, "hit"))
                plans.append((Row("ours as one-file: cache miss", [str(onefile)], "fresh cache dir per run"),
                              req, True, "miss"))
            if not args.no_python and script.exists():
                plans.append((Row("python console script: hit", [str(script)]), req, True, "hit"))
                plans.append((Row("python console script: miss", [str(script)], "fresh cache dir per run"),
                               req, True, "miss"))
            if go_bin is not None:
                plans.append((Row(f"go provider {args.go_version}", [str(go_bin)],
                                  "no cache: every run calls the API"), req, True, "none"))
            for row, *_ in plans:
                if row.command[0] != str(script):  # a console script's size means nothing
                    row.size_bytes = Path(row.command[0]).stat().st_size

            def env_for(mode: str, i: int) -> dict[str, str]:
                run_env = dict(env)
                if mode in ("hit", "first"):
                    run_env["ECR_KUBELET_CACHE_DIR"] = str(hit_cache)
                if mode == "first":
                    run_env["ECR_KUBELET_RUNTIME_DIR"] = str(tmp / f"runtime-{i}")
                elif mode == "miss":
                    run_env["ECR_KUBELET_CACHE_DIR"] = str(tmp / f"miss-{i}")
                return run_env

            # warm the hit cache and the page cache
            for row, stdin, expect, mode in plans:
                for w in range(args.warmup):
                    run_once(row.command, stdin, env_for(mode, -1 - w), expect, runner)
                    shutil.rmtree(tmp / f"miss-{-1 - w}", ignore_errors=True)
                    shutil.rmtree(tmp / f"runtime-{-1 - w}", ignore_errors=True)
            log(f"timing {len(plans)} rows x {args.iterations} runs (interleaved)")
            for i in range(args.iterations):
                for row, stdin, expect, mode in plans:
                    row.samples.append(run_once(row.command, stdin, env_for(mode, i), expect, runner))
                    if mode == "miss":
                        shutil.rmtree(tmp / f"miss-{i}", ignore_errors=True)
                    elif mode == "first":
                        shutil.rmtree(tmp / f"runtime-{i}", ignore_errors=True)
            rows = [row for row, *_ in plans]

            if args.storm > 0:
                if binary.exists():
                    log(f"boot storm: {args.storm} concurrent cold runs of our binary, one empty cache dir"
                        " and one empty runtime dir")
                    storms["ours"] = storm([str(binary)], env, stub, args.storm, args.storm_delay,
                                           tmp / "storm-cache", tmp / "storm-runtime")
                if go_bin is not None:
                    log(f"boot storm: {args.storm} concurrent runs of the Go provider")
                    storms["go"] = storm([str(go_bin)], env, stub, args.storm, args.storm_delay, None)
    finally:
        stub.stop()

    result = report(rows, storms, notes, go_note, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.json}")
    return 0


def report(rows: list[Row], storms: dict[str, Any], notes: dict[str, str], go_note: str,
           args: argparse.Namespace) -> dict[str, Any]:
    summaries = [r.summary() for r in rows]
    by_name = {s["name"]: s for s in summaries}
    floor = by_name.get("floor (hello-world one-file)", {}).get("median_ms")
    go = next((s for s in summaries if s["name"].startswith("go provider")), None)
    go_ms = go.get("median_ms") if go else None
    for s in summaries:
        med = s.get("median_ms")
        s["vs_floor"] = round(med / floor, 2) if med and floor else None
        s["vs_go"] = round(med / go_ms, 2) if med and go_ms else None

    hit = by_name.get("ours: cache hit", {})
    miss = by_name.get("ours: cache miss", {})
    ours_storm = storms.get("ours", {})
    checks: dict[str, Any] = {}
    if hit.get("size_bytes"):
        checks["binary_size_mb"] = _check(hit["size_bytes"] / 1e6, TARGETS["binary_size_mb"])
    if hit.get("vs_floor"):
        checks["hit_vs_floor"] = _check(hit["vs_floor"], TARGETS["hit_vs_floor"])
    if miss.get("vs_floor"):
        checks["miss_vs_floor"] = _check(miss["vs_floor"], TARGETS["miss_vs_floor"])
    rss = max((s.get("peak_rss_mb", 0) for s in (hit, miss)), default=0)
    if rss:
        checks["peak_rss_mb"] = _check(rss, TARGETS["peak_rss_mb"])
    if ours_storm:
        checks["storm_api_calls"] = _check(ours_storm["api_calls"], TARGETS["storm_api_calls"])
        checks["storm_failures"] = _check(ours_storm["failures"], TARGETS["storm_failures"])

    header = f"{'row':34} {'median':>8} {'p95':>8} {'cpu':>7} {'rss MB':>7} {'size MB':>8} {'x floor':>8} {'x go':>6}"
    print(header)
    print("-" * len(header))
    for s in summaries:
        print(
            f"{s['name'][:34]:34} {_fmt(s.get('median_ms'), 'ms'):>8} {_fmt(s.get('p95_ms'), 'ms'):>8} "
            f"{_fmt(s.get('cpu_ms'), 'ms'):>7} {_fmt(s.get('peak_rss_mb'), ''):>7} "
            f"{_fmt(s['size_bytes'] / 1e6 if s['size_bytes'] else None, ''):>8} "
            f"{_fmt(s.get('vs_floor'), 'x'):>8} {_fmt(s.get('vs_go'), 'x'):>6}"
            + (f"  [{s['failures']} failed]" if s["failures"] else "")
            + (f"  ({s['notes']})" if s["notes"] else "")
        )
    if go is None:
        print(f"{'go provider':34} not measured: {go_note}")
    for key, note in notes.items():
        print(f"note ({key}): {note}")
    for who, st in storms.items():
        print(f"boot storm ({who}): {st['invocations']} concurrent runs, wall {st['wall_ms']:.0f} ms, "
              f"{st['api_calls']} GetAuthorizationToken calls, {st['failures']} failures "
              f"(stub delay {st['stub_delay_s']} s)")
    for name, c in checks.items():
        print(f"target {name}: {c['value']} <= {c['target']}: {'PASS' if c['pass'] else 'FAIL'}")

    return {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "loadavg": os.getloadavg()},
        "iterations": args.iterations,
        "rows": summaries,
        "storms": storms,
        "targets": TARGETS,
        "checks": checks,
        "notes": {**notes, **({"go": go_note} if go_note else {})},
        "samples": {r.name: [asdict(s) for s in r.samples] for r in rows},
    }


def _check(value: float, target: float) -> dict[str, Any]:
    return {"value": round(value, 2), "target": target, "pass": value <= target}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}{unit}" if unit == "ms" else f"{value:.2f}{unit}" if unit == "x" else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
