#!/usr/bin/env python3
"""Docker credential-helper call time: ours vs Amazon's `docker-credential-ecr-login` v0.13.0, side by side.

    .venv/bin/python bench/helper_call.py [-n 31] [--amazon PATH]

Rows, interleaved run by run so background load hits them alike: a `get` answered from the cache
(hit) and one with the cache disabled (`AWS_ECR_DISABLE_CACHE=1`: one GetAuthorizationToken call)
for our release binary invoked as `docker-credential-ecr-login` (a symlink to
`dist/release/ecr-credential-provider-linux-ARCH`, `scripts/release`; else `dist/ecr-credential-provider`),
for our installed console script the same way, for Amazon's helper v0.13.0 (`--amazon`, default
AMAZON_HELPER below; build it outside the checkout with
`GOBIN=~/.cache/ecr-kubelet-bench/bin go install
github.com/awslabs/amazon-ecr-credential-helper/ecr-login/cli/docker-credential-ecr-login@v0.13.0`), and for
Debian's package (`/usr/bin/docker-credential-ecr-login`, 0.6.0) when installed.

Every row reaches the AWS stub the same way (Debian's 0.6 takes no endpoint override):
`HTTPS_PROXY` is `tests/connect_proxy.py`, which terminates TLS for `api.ecr.us-east-1.amazonaws.com`
with a throwaway CA (`AWS_CA_BUNDLE`) and forwards to the stub on loopback. Timing, CPU and peak RSS
come from `bench/run.py`'s C spawner. Needs the project's virtualenv (`cryptography` for the test CA).
The last lines give each of our rows as a multiple of Amazon's v0.13.0 (median wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
from pathlib import Path

from run import ROOT, Row, Stub, build_runner, log, percentile, run_once, scratch

sys.path.insert(0, str(ROOT / "tests"))
from connect_proxy import ConnectProxy
from registry_server import make_tls

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
ECR_API = "api.ecr.us-east-1.amazonaws.com"
DEBIAN_HELPER = Path("/usr/bin/docker-credential-ecr-login")
AMAZON_HELPER = Path.home() / ".cache" / "ecr-kubelet-bench" / "bin" / "docker-credential-ecr-login"
AMAZON = "amazon v0.13.0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("-n", "--iterations", type=int, default=21, help="timed runs per row (default 21)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per row first (default 2)")
    parser.add_argument("--amazon", type=Path, default=AMAZON_HELPER,
                        help=f"Amazon's docker-credential-ecr-login v0.13.0 (default {AMAZON_HELPER})")
    args = parser.parse_args(argv)

    stub = Stub()
    runner, runner_note = build_runner()
    if runner_note:
        log(runner_note)
    try:
        with scratch() as tmp:
            make_tls(tmp, [ECR_API])
            server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_tls.load_cert_chain(tmp / "server.pem", tmp / "server.key")
            stub_port = int(stub.url.rsplit(":", 1)[1])
            proxy = ConnectProxy({}, {ECR_API: (stub_port, server_tls)}).start()
            home = tmp / "home"
            home.mkdir()
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
                "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": "benchSECRET/wJalrXUtnFEMI",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": str(home / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"),
                "HTTPS_PROXY": proxy.url, "AWS_CA_BUNDLE": str(tmp / "ca.pem"),
                "ECR_KUBELET_CACHE_DIR": str(tmp / "ours-cache"), "AWS_ECR_CACHE_DIR": str(tmp / "amazon-cache"),
                "ECR_KUBELET_RUNTIME_DIR": str(tmp / "runtime"),
            }
            commands: dict[str, list[str]] = {}
            arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
            release = ROOT / "dist" / "release" / f"ecr-credential-provider-linux-{arch}"
            binary = release if release.exists() else ROOT / "dist" / "ecr-credential-provider"
            if binary.exists():  # its launcher passes the invoked name on
                commands[f"ours ({binary.relative_to(ROOT)})"] = [str(_link(tmp / "bin-binary", binary)), "get"]
            else:
                log(f"{release} missing (scripts/release --arch {arch})")
            script = Path(sys.executable).parent / "ecr-credential-provider"
            commands["ours (python console script)"] = [str(_link(tmp / "bin", script)), "get"]
            if args.amazon.exists():
                commands[AMAZON] = [str(args.amazon), "get"]
            else:
                log(f"{args.amazon} missing: see this script's docstring to build Amazon's v0.13.0")
            if DEBIAN_HELPER.exists():
                commands["debian docker-credential-ecr-login 0.6.0"] = [str(DEBIAN_HELPER), "get"]
            plans: list[tuple[Row, dict[str, str]]] = []
            for name, cmd in commands.items():
                plans.append((Row(f"{name}: hit", cmd), env))
                plans.append((Row(f"{name}: miss", cmd, "cache disabled: one API call"),
                               {**env, "AWS_ECR_DISABLE_CACHE": "1"}))
            stdin = (REGISTRY + "\n").encode()
            for row, run_env in plans:  # each answers with a password the stub issued, via the proxy
                before = stub.token_calls()
                out = subprocess.run(row.command, input=stdin, env=run_env, capture_output=True, check=False)
                if out.returncode != 0 or json.loads(out.stdout)["Username"] != "AWS":
                    raise SystemExit(f"{row.name}: {out.stdout!r} {out.stderr!r}")
                assert stub.token_calls() - before <= 1
                for _ in range(args.warmup):
                    run_once(row.command, stdin, run_env, False, runner)
            calls_before = stub.token_calls()
            log(f"timing {len(plans)} rows x {args.iterations} runs (interleaved)")
            for _ in range(args.iterations):
                for row, run_env in plans:
                    row.samples.append(run_once(row.command, stdin, run_env, False, runner))
            misses = sum(1 for row, _ in plans if "miss" in row.name) * args.iterations
            api_calls = stub.token_calls() - calls_before
            proxy.stop()
    finally:
        stub.stop()

    print(f"{'row':48} {'median':>8} {'p95':>8} {'cpu':>7} {'rss MB':>7}")
    print("-" * 82)
    medians: dict[str, float] = {}
    for row, _ in plans:
        good = sorted(s.wall_ms for s in row.samples if s.ok)
        failed = len(row.samples) - len(good)
        if not good:
            print(f"{row.name:48} all {failed} runs failed")
            continue
        medians[row.name] = statistics.median(good)
        cpu = statistics.median(s.cpu_ms for s in row.samples if s.ok)
        rss = max(s.maxrss_kb for s in row.samples if s.ok) / 1024
        print(f"{row.name:48} {medians[row.name]:6.0f}ms {percentile(good, 95):6.0f}ms {cpu:5.0f}ms "
              f"{rss:7.1f}" + (f"  ({failed} failed)" if failed else ""))
    for kind in ("hit", "miss"):
        base = medians.get(f"{AMAZON}: {kind}")
        for name, median in medians.items():
            if base and name.startswith("ours") and name.endswith(f": {kind}"):
                print(f"{name}: {median / base:.2f}x {AMAZON}'s {kind}")
    print(f"API calls during the timed runs: {api_calls} (expected {misses}: one per miss, none per hit)")
    return 0 if api_calls == misses else 1


def _link(directory: Path, target: Path) -> Path:
    """`target` invoked as `docker-credential-ecr-login`, as users install it."""
    directory.mkdir()
    link = directory / "docker-credential-ecr-login"
    link.symlink_to(target)
    return link


if __name__ == "__main__":
    sys.exit(main())
