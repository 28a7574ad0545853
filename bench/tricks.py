#!/usr/bin/env python3
"""What each of the binary's tricks on private internals gains, on a cache hit and a cache miss.

    .venv/bin/python bench/tricks.py            # 21 interleaved runs per row
    .venv/bin/python bench/tricks.py -n 41

The tricks load only in the frozen binary (src/ecr_kubelet/pinned.py), so the release binary cannot
run without one of them. This runs the installed program (this interpreter, the project's venv) as
the frozen binary does: ``sys.frozen`` set, the bundled versions recorded (tests/frozen.py), the
compiled-pattern table recorded by packaging/re_cache.py in its ``sys._MEIPASS``, the garbage
collector off (packaging/entry.py). Rows: every trick on; each trick off in turn; none (a pip
install). A trick's gain is the median of its "off" row less the median of the "all on" row, each
from the same interleaved run against the local stub (bench/run.py's runner and stub), in wall time
and in CPU time (user + sys, from wait4): on a machine shared with other work the CPU time is the
steadier measure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from run import REGISTRY, Sample, Stub, build_runner, log, provider_env, request_bytes, run_once, scratch  # noqa: E402

from ecr_kubelet import compiled_re, pinned  # noqa: E402
from frozen import prelude  # noqa: E402  (tests/frozen.py)

MAIN = "from ecr_kubelet.cli import run\nrun()\n"
SERVICES = ("ecr", "ecr-public", "sts", "sso", "sso-oidc", "signin")  # as the spec records them


def variants(table_dir: str, empty_dir: str) -> dict[str, str]:
    """Row name -> the program's source, run with `python -c`."""
    versions = pinned.versions()
    gc_off = "import gc\ngc.disable()\n"
    on = gc_off + prelude(versions, meipass=table_dir)
    return {
        "all tricks": on + MAIN,
        "without compiled_re": gc_off + prelude(versions, meipass=empty_dir) + MAIN,
        "without stand_ins": gc_off + prelude({**versions, "botocore": "-", "urllib3": "-"}, meipass=table_dir) + MAIN,
        "without jsoncodec's scanner": on + "import ecr_kubelet.jsoncodec as j\nj.HAVE_C_CODEC = False\n" + MAIN,
        "without hashing's built-in SHA-256":
            on + "import hashlib, ecr_kubelet.hashing as h\nh.sha256 = hashlib.sha256\n" + MAIN,
        "none (as a pip install)": gc_off + MAIN,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("-n", "--iterations", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    runner, note = build_runner()
    if note:
        log(note)
    stub = Stub()
    try:
        with scratch() as tmp:
            table_dir, empty_dir = tmp / "bundle", tmp / "empty"
            table_dir.mkdir()
            empty_dir.mkdir()
            subprocess.run([sys.executable, str(ROOT / "packaging" / "re_cache.py"), str(table_dir / compiled_re.FILE),
                            *SERVICES], check=True, env={"PATH": "/usr/bin:/bin", "AWS_CONFIG_FILE": "/dev/null",
                                                         "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
            home = tmp / "home"
            home.mkdir()
            env = provider_env(stub.url, home)
            req = request_bytes(f"{REGISTRY}/team/app")
            rows = variants(str(table_dir), str(empty_dir))
            samples: dict[tuple[str, str], list[Sample]] = {(r, m): [] for r in rows for m in ("hit", "miss")}

            def run(name: str, mode: str, i: int) -> Sample:
                cache = tmp / ("hit-cache" if mode == "hit" else f"miss-{i}")
                sample = run_once([sys.executable, "-c", rows[name]], req, {**env, "ECR_KUBELET_CACHE_DIR": str(cache)},
                                  True, runner)
                if mode == "miss":
                    shutil.rmtree(cache, ignore_errors=True)
                if not sample.ok:
                    raise SystemExit(f"bench: {name} ({mode}) failed")
                return sample

            for w in range(args.warmup):
                for name in rows:
                    for mode in ("hit", "miss"):
                        run(name, mode, -1 - w)
            log(f"timing {len(samples)} rows x {args.iterations} runs (interleaved)")
            for i in range(args.iterations):
                for name, mode in samples:
                    samples[name, mode].append(run(name, mode, i))
    finally:
        stub.stop()

    medians = {(name, mode, what): statistics.median(getattr(s, what) for s in values)
               for (name, mode), values in samples.items() for what in ("wall_ms", "cpu_ms")}
    print(f"Python {sys.version.split()[0]}, {args.iterations} interleaved runs per row, medians in ms "
          f"(gain: this row less 'all tricks')")
    print(f"{'row':38} {'hit wall':>9} {'gain':>6} {'cpu':>6} {'gain':>6} {'miss wall':>10} {'gain':>6} {'cpu':>6}"
          f" {'gain':>6}")
    for name in rows:
        cells = []
        for mode in ("hit", "miss"):
            for what in ("wall_ms", "cpu_ms"):
                value = medians[name, mode, what]
                width = {("hit", "wall_ms"): 9, ("miss", "wall_ms"): 10}.get((mode, what), 6)
                cells.append(f"{value:{width}.1f} {value - medians['all tricks', mode, what]:+6.1f}")
        print(f"{name:38} " + " ".join(cells))
    out = ROOT / "bench" / "results" / "tricks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({f"{n} / {m} / {w}": round(v, 1) for (n, m, w), v in medians.items()}, indent=2) + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
