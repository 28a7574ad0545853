#!/usr/bin/env python3
"""Cold-start benchmark: our binary vs. a PyInstaller hello-world floor vs. the official Go provider.

One command builds what is missing, runs everything against the local AWS stub
(``tests/stub_server.py``) in one interleaved run, prints a table and the issue's targets with
PASS/FAIL, and writes ``bench/results/latest.json``::

    python bench/run.py                 # as root: the release binary and its build root's Python
    python bench/run.py -n 31 --storm 50

What is measured (the subject): the release binary ``dist/release/ecr-credential-provider-linux-<arch>``
when it exists, its floor built by that binary's own Python, /build/venv/bin/python inside its
Debian build root ``build/roots/bookworm-<arch>`` (``scripts/in-root``, so as root); otherwise
``dist/ecr-credential-provider`` (built with ``scripts/build-binary`` if missing) and the project
venv's Python. ``--binary`` / ``--floor-python`` / ``--root`` choose explicitly.

Rows: the floor (a *default* stripped PyInstaller one-file hello world: ``pyinstaller --onefile
--strip hello.py``, nothing else changed), our binary on its first run (fresh runtime dir: unpack,
then a cache hit), on a cache hit and on a cache miss (fresh cache dir every run, bundle
unpacked), and the official Go provider (pinned version, built with ``go install``; it has no
cache, so every run calls the API). Each run is timed from spawn to reap by ``bench/runner.c``;
CPU time (user+sys) and peak RSS come from its ``wait4``, which include the descendants the child
reaped (the one-file bootloader waits for its Python child; the launcher execs, so it has none).

The boot storm starts N concurrent cold invocations for N different images of ONE registry,
sharing one empty cache dir, with the stub answering after ``--storm-delay`` seconds, and counts
the ``GetAuthorizationToken`` calls the stub received and the failed invocations; then the same for
the Go provider. Ours runs as on a node that rebooted: the bundle already unpacked in the runtime
dir (the package's post-install, deploy/node/install.sh and the DaemonSet's installer run the binary
once); a second storm of ours starts from an empty runtime dir too (the launcher unpacks once for
all), as on a node whose image carries the file but never ran it.

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
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
RELEASE_BINARY = ROOT / "dist" / "release" / f"ecr-credential-provider-linux-{ARCH}"
RELEASE_ROOT = ROOT / "build" / "roots" / f"bookworm-{ARCH}"  # where scripts/release builds it
ROOT_PYTHON = "/build/venv/bin/python"  # inside that root
LOCAL_BINARY = ROOT / "dist" / "ecr-credential-provider"
GO_MODULE = "k8s.io/cloud-provider-aws/cmd/ecr-credential-provider"
GO_VERSION = "v1.37.0"  # builds from the module proxy with Go 1.26; honours AWS_ENDPOINT_URL_<SERVICE>
ACCOUNT = "123456789012"
REGISTRY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
API_V1 = "credentialprovider.kubelet.k8s.io/v1"
HELLO = 'print("hello world")\n'

# Issue 9's targets: (what, limit); each ratio is of medians from the same interleaved run.
TARGETS = {
    "hit_vs_go": ("cache hit / Go provider's call", 2.0),
    "miss_vs_floor": ("cache miss / hello-world floor", 1.5),
    "storm_vs_go": ("boot storm wall / Go provider's storm (ours 1 API call, 0 failures)", 2.0),
    "hit_peak_rss_mb": ("peak RSS of a cache hit, MB", 25.0),
}

ROWS = {"floor": "floor (hello-world one-file)", "first": "ours: first run (unpack)", "hit": "ours: cache hit",
        "miss": "ours: cache miss"}


def request_bytes(image: str) -> bytes:
    req = {"kind": "CredentialProviderRequest", "apiVersion": API_V1, "image": image}
    return (json.dumps(req, separators=(",", ":")) + "\n").encode()


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---- building -------------------------------------------------------------------------------------


def venv_python() -> str:
    candidate = ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


@dataclass(frozen=True)
class FloorPython:
    """The Python that builds the floor: a host interpreter, or ROOT_PYTHON inside a build root."""

    python: str
    root: Path | None = None

    def command(self, *args: str) -> list[str]:
        if self.root is None:
            return [self.python, *args]
        return [str(ROOT / "scripts" / "in-root"), str(self.root), "env", "-i", "PATH=/usr/bin:/bin", "HOME=/root",
                "LC_ALL=C.UTF-8", self.python, *args]

    def describe(self) -> str:
        return f"{self.python} in {self.root}" if self.root else self.python


def build_local_binary(python: str) -> str | None:
    log("building dist/ecr-credential-provider (scripts/build-binary)")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-binary"), "--python", python],
        capture_output=True, text=True, timeout=900, check=False,
    )
    if proc.returncode != 0:
        return f"scripts/build-binary failed: {proc.stderr.strip()[-400:]}"
    return None


def build_floor(py: FloorPython, rebuild: bool) -> tuple[Path | None, str]:
    """`pyinstaller --onefile --strip hello.py` with the given Python, nothing else changed."""
    if py.root is not None and os.geteuid() != 0:
        return None, f"building the floor inside {py.root} needs root (scripts/in-root); or pass --floor-python"
    info = subprocess.run(
        py.command("-c", "import sys, PyInstaller; print(sys.version.split()[0], PyInstaller.__version__)"),
        capture_output=True, text=True, check=False,
    )
    if info.returncode != 0:
        return None, f"PyInstaller not importable by {py.describe()}: {info.stderr.strip()[-200:]}"
    key = hashlib.sha256(f"{py.describe()} {info.stdout} {HELLO}".encode()).hexdigest()[:12]
    binary = BUILD / "floor" / key / "hello"
    if binary.exists() and not rebuild:
        return binary, info.stdout.strip()
    log(f"building the floor: pyinstaller --onefile --strip hello.py with {py.describe()}")
    # Inside a root the build happens in its /build/bench-floor; the host sees it under the root.
    work = (py.root / "build" / "bench-floor") if py.root else (BUILD / "floor" / key / "work")
    inner = Path("/build/bench-floor") if py.root else work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "hello.py").write_text(HELLO, encoding="utf-8")
    proc = subprocess.run(
        py.command("-m", "PyInstaller", "--onefile", "--strip", "--noconfirm", "--log-level", "ERROR",
                   "--distpath", str(inner / "dist"), "--workpath", str(inner / "work"),
                   "--specpath", str(inner), str(inner / "hello.py")),
        capture_output=True, text=True, timeout=600, check=False, cwd=str(work),
    )
    built = work / "dist" / "hello"
    if proc.returncode != 0 or not built.exists():
        return None, f"floor build failed: {proc.stderr.strip()[-400:]}"
    binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built, binary)
    if py.root:
        shutil.rmtree(work, ignore_errors=True)
    return binary, info.stdout.strip()


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


def pick_subject(args: argparse.Namespace) -> tuple[Path, FloorPython, list[str]]:
    """The binary to measure and the Python its floor is built with (see the module docstring)."""
    notes: list[str] = []
    release = args.binary is None and RELEASE_BINARY.exists()
    binary = Path(args.binary) if args.binary else RELEASE_BINARY if release else LOCAL_BINARY
    if args.floor_python:
        return binary, FloorPython(args.floor_python), notes
    root = Path(args.root).resolve() if args.root else RELEASE_ROOT if release else None
    if root is not None:
        if (root / ".ecr-root-stamp").is_file() and Path(root, ROOT_PYTHON.lstrip("/")).exists():
            return binary, FloorPython(ROOT_PYTHON, root), notes
        notes.append(f"no build root with {ROOT_PYTHON} at {root}: the floor is built with the venv's Python, "
                     "not the binary's")
    return binary, FloorPython(venv_python()), notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("-n", "--iterations", type=int, default=21, help="timed runs per row (default 21)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per row first (default 2)")
    parser.add_argument("--storm", type=int, default=50, help="concurrent invocations in the boot storm (0: skip)")
    parser.add_argument("--storm-delay", type=float, default=0.2,
                        help="seconds the stub waits before answering during the storm (default 0.2)")
    parser.add_argument("--go-version", default=GO_VERSION, help=f"official provider version (default {GO_VERSION})")
    parser.add_argument("--no-go", action="store_true", help="skip the Go provider")
    parser.add_argument("--binary", default=os.environ.get("ECR_KUBELET_TEST_BINARY"),
                        help=f"binary to measure (default {RELEASE_BINARY.relative_to(ROOT)} if it exists, "
                             f"else {LOCAL_BINARY.relative_to(ROOT)}, built if missing)")
    parser.add_argument("--root", help="build root whose /build/venv/bin/python builds the floor "
                                       f"(default {RELEASE_ROOT.relative_to(ROOT)} for the release binary)")
    parser.add_argument("--floor-python", help="host Python that builds the floor instead (default: the venv's "
                                               "when the binary is not the release binary)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the floor (and the Go provider)")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="where to write results")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be >= 1")

    binary, floor_python, subject_notes = pick_subject(args)
    notes = {f"subject{i}": note for i, note in enumerate(subject_notes)}
    if not binary.exists() and binary == LOCAL_BINARY:
        err = build_local_binary(venv_python())
        if err:
            notes["ours"] = err
    floor, floor_info = build_floor(floor_python, args.rebuild)
    notes["floor"] = (f"built with {floor_python.describe()} (Python, PyInstaller: {floor_info})" if floor
                      else floor_info)
    go_bin, go_note = (None, "skipped (--no-go)") if args.no_go else build_go(args.go_version, args.rebuild)
    runner, runner_note = build_runner()
    if runner_note:
        notes["runner"] = runner_note

    stub = Stub()
    rows: dict[str, Row] = {}
    storms: dict[str, Any] = {}
    try:
        with scratch() as tmp:
            home = tmp / "home"
            home.mkdir()
            env = provider_env(stub.url, home)
            req = request_bytes(f"{REGISTRY}/team/app")

            # key -> (row, stdin, expect auth); runs of every row are interleaved
            plans: dict[str, tuple[Row, bytes, bool]] = {}
            if floor is not None:
                plans["floor"] = (Row(ROWS["floor"], [str(floor)]), b"", False)
            if binary.exists():
                plans["first"] = (Row(ROWS["first"], [str(binary)], "fresh runtime dir per run, cache hit"), req, True)
                plans["hit"] = (Row(ROWS["hit"], [str(binary)]), req, True)
                plans["miss"] = (Row(ROWS["miss"], [str(binary)], "fresh cache dir per run"), req, True)
            else:
                notes.setdefault("ours", f"{binary} not found")
            if go_bin is not None:
                plans["go"] = (Row(f"go provider {args.go_version}", [str(go_bin)],
                                   "no cache: every run calls the API"), req, True)
            for row, *_ in plans.values():
                row.size_bytes = Path(row.command[0]).stat().st_size

            def env_for(mode: str, i: int) -> dict[str, str]:
                run_env = dict(env)
                if mode in ("hit", "first"):
                    run_env["ECR_KUBELET_CACHE_DIR"] = str(tmp / "hit-cache")
                if mode == "first":
                    run_env["ECR_KUBELET_RUNTIME_DIR"] = str(tmp / f"runtime-{i}")
                elif mode == "miss":
                    run_env["ECR_KUBELET_CACHE_DIR"] = str(tmp / f"miss-{i}")
                return run_env

            def run(mode: str, i: int) -> Sample:
                row, stdin, expect = plans[mode]
                sample = run_once(row.command, stdin, env_for(mode, i), expect, runner)
                shutil.rmtree(tmp / f"miss-{i}", ignore_errors=True)
                shutil.rmtree(tmp / f"runtime-{i}", ignore_errors=True)
                return sample

            for mode in plans:  # fills the hit cache, unpacks the bundle, warms the page cache
                for w in range(args.warmup):
                    run(mode, -1 - w)
            log(f"timing {len(plans)} rows x {args.iterations} runs (interleaved)")
            for i in range(args.iterations):
                for mode, (row, *_) in plans.items():
                    row.samples.append(run(mode, i))
            rows = {mode: row for mode, (row, *_) in plans.items()}

            if args.storm > 0:
                if binary.exists():
                    log(f"boot storm: {args.storm} concurrent cold runs of our binary, one empty cache dir,"
                        " the bundle unpacked (as after its install)")
                    unpacked = tmp / "storm-runtime"
                    subprocess.run([str(binary), "--version"], env={**env, "ECR_KUBELET_RUNTIME_DIR": str(unpacked)},
                                   stdout=subprocess.DEVNULL, check=True, timeout=120)
                    storms["ours"] = storm([str(binary)], env, stub, args.storm, args.storm_delay,
                                           tmp / "storm-cache", unpacked)
                    log(f"boot storm: {args.storm} concurrent cold runs of our binary, one empty cache dir"
                        " and one empty runtime dir")
                    storms["ours, empty runtime dir"] = storm([str(binary)], env, stub, args.storm, args.storm_delay,
                                                              tmp / "storm-cache-2", tmp / "storm-runtime-2")
                if go_bin is not None:
                    log(f"boot storm: {args.storm} concurrent runs of the Go provider")
                    storms["go"] = storm([str(go_bin)], env, stub, args.storm, args.storm_delay, None)
    finally:
        stub.stop()

    result = report(rows, storms, notes, go_note, binary, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.json}")
    return 0


def checks(summaries: dict[str, dict[str, Any]], storms: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The targets that could be measured in this run, each {value, target, pass}."""
    def median(key: str) -> float | None:
        return summaries.get(key, {}).get("median_ms")

    out: dict[str, dict[str, Any]] = {}
    hit, miss, floor, go = median("hit"), median("miss"), median("floor"), median("go")
    if hit and go:
        out["hit_vs_go"] = _check(hit / go, "hit_vs_go")
    if miss and floor:
        out["miss_vs_floor"] = _check(miss / floor, "miss_vs_floor")
    ours, theirs = storms.get("ours"), storms.get("go")
    if ours and theirs:
        out["storm_vs_go"] = _check(ours["wall_ms"] / theirs["wall_ms"], "storm_vs_go")
        out["storm_vs_go"]["pass"] &= ours["api_calls"] == 1 and ours["failures"] == 0
    if "hit" in summaries and "peak_rss_mb" in summaries["hit"]:
        out["hit_peak_rss_mb"] = _check(summaries["hit"]["peak_rss_mb"], "hit_peak_rss_mb")
    return out


def report(rows: dict[str, Row], storms: dict[str, Any], notes: dict[str, str], go_note: str, binary: Path,
           args: argparse.Namespace) -> dict[str, Any]:
    summaries = {mode: row.summary() for mode, row in rows.items()}
    floor = summaries.get("floor", {}).get("median_ms")
    go_ms = summaries.get("go", {}).get("median_ms")
    for s in summaries.values():
        med = s.get("median_ms")
        s["vs_floor"] = round(med / floor, 2) if med and floor else None
        s["vs_go"] = round(med / go_ms, 2) if med and go_ms else None
    results = checks(summaries, storms)

    generated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{generated}  {binary}  ({args.iterations} interleaved runs per row, load {load}, {os.cpu_count()} CPUs)")
    header = f"{'row':30} {'median':>8} {'p95':>8} {'cpu':>7} {'rss MB':>7} {'size MB':>8} {'x floor':>8} {'x go':>6}"
    print(header)
    print("-" * len(header))
    for s in summaries.values():
        print(
            f"{s['name'][:30]:30} {_fmt(s.get('median_ms'), 'ms'):>8} {_fmt(s.get('p95_ms'), 'ms'):>8} "
            f"{_fmt(s.get('cpu_ms'), 'ms'):>7} {_fmt(s.get('peak_rss_mb'), ''):>7} "
            f"{_fmt(s['size_bytes'] / 1e6 if s['size_bytes'] else None, ''):>8} "
            f"{_fmt(s.get('vs_floor'), 'x'):>8} {_fmt(s.get('vs_go'), 'x'):>6}"
            + (f"  [{s['failures']} failed]" if s["failures"] else "")
            + (f"  ({s['notes']})" if s["notes"] else "")
        )
    if "go" not in summaries:
        print(f"{'go provider':30} not measured: {go_note}")
    for who, st in storms.items():
        print(f"boot storm ({who}): {st['invocations']} concurrent runs, wall {st['wall_ms']:.0f} ms, "
              f"{st['api_calls']} GetAuthorizationToken calls, {st['failures']} failures "
              f"(stub delay {st['stub_delay_s']} s)")
    for key, note in notes.items():
        print(f"note ({key}): {note}")
    for key, (what, limit) in TARGETS.items():
        c = results.get(key)
        verdict = f"{c['value']} <= {limit}: {'PASS' if c['pass'] else 'FAIL'}" if c else "not measured"
        print(f"target {key} ({what}): {verdict}")

    return {
        "generated": generated,
        "binary": str(binary),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "loadavg": os.getloadavg()},
        "iterations": args.iterations,
        "rows": summaries,
        "storms": storms,
        "targets": {key: limit for key, (_what, limit) in TARGETS.items()},
        "checks": results,
        "notes": {**notes, **({"go": go_note} if go_note else {})},
        "samples": {row.name: [asdict(s) for s in row.samples] for row in rows.values()},
    }


def _check(value: float, key: str) -> dict[str, Any]:
    limit = TARGETS[key][1]
    return {"value": round(value, 2), "target": limit, "pass": value <= limit}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}{unit}" if unit == "ms" else f"{value:.2f}{unit}" if unit == "x" else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
