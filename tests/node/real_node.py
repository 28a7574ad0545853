#!/usr/bin/env python3
"""A real node: a real kubelet and containerd pull a private "ECR" image with our credentials.

The release .deb is installed with dpkg as an operator would, inside private namespaces (network,
mount, PID): /etc, /usr and /var are overlays whose changes die with the namespace, /run is a fresh
tmpfs, and the ECR host names map to loopback through the overlay's /etc/hosts. Nothing of the
machine's own /etc, /usr or /var changes. In there run the AWS stub (tests/stub_server.py), Debian's
docker-registry (htpasswd over TLS, a throwaway CA trusted through containerd's certs.d), Debian's
containerd + runc, and the kubelet (and, for service-account and Pod Identity modes, etcd and
kube-apiserver) built by tests/node/build-kube. The kubelet's provider configuration is a shipped
example, unchanged but for the AWS endpoints (its `env`; one Pod Identity check adds
--sa-without-role=fail to its `args`), and the RBAC and workload manifests are the shipped ones.

Checks, each proven from the stub's call log, the registry's log, the kubelet's pod status and the
plugin's metrics file (one increment per run of the plugin):

* node mode: a static pod of a standalone kubelet pulls with the node's identity and runs;
* a token whose password the registry does not know: the registry answers 401, the kubelet reports
  ErrImagePull;
* service-account mode: the pod's service-account token is exchanged for the role its service account
  names (AssumeRoleWithWebIdentity), and the pull uses that role's token;
* a second pull by the same service account uses the kubelet's cache: the registry serves it, the
  plugin does not run, AWS is not called;
* EKS Pod Identity (the shipped pod-identity.yaml and its RBAC, a service account without annotation):
  the pod's token (audience pods.eks.amazonaws.com) is exchanged once with AssumeRoleForPodIdentity for
  the cluster the config names, signed by the node, and ECR is asked with the association's credentials
  only (the stub gives the registry's password to those alone); a service account without association
  falls back to the node (its token refused: 401) and, with --sa-without-role=fail, gets no ECR call;
* the other install routes, each followed by a pull: the single file with deploy/node/install.sh (the
  kubelet's flags from its drop-in), and, after `dpkg -r`, the DaemonSet (the installer image imported
  from the release's OCI archive, the DaemonSet's pod run by the kubelet with the host paths it mounts).

Usage (root): real_node.py --release DIR [--kube DIR] [--keep]. DIR holds the amd64 release (scripts/release);
--kube the kubelet and kube-apiserver (default: tests/node/build-kube's cache). Prints one line per
check and exits 0 when all pass; prints "node test: skipped: REASON" and exits 0 only where the kernel
lacks what it needs. Every process it starts is stopped by PID and every mount undone at the end,
whatever happens; the PID namespace ends anything left.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

NAMESPACE_MARK = "ECR_KUBELET_NODE_TEST_INSIDE"
NODE = "node-1"
REGION = "us-west-2"
NODE_ACCOUNT = "123456789012"  # the stub's account for static keys: the node's own registry
WRONG_ACCOUNT = "111122223333"  # a registry the node first asks about while the stub's password is wrong
NODE_HOST = f"{NODE_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
WRONG_HOST = f"{WRONG_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
SINGLE_ACCOUNT = "444455556666"  # pulled from after the single-file install
SINGLE_HOST = f"{SINGLE_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
DAEMONSET_ACCOUNT = "777788889999"  # pulled from after the DaemonSet's installer ran
DAEMONSET_HOST = f"{DAEMONSET_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
POD_IDENTITY_ACCOUNT = "135791357913"  # the Pod Identity role's account; its pods pull from its registry
POD_IDENTITY_HOST = f"{POD_IDENTITY_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
POD_IDENTITY_ROLE = f"arn:aws:iam::{POD_IDENTITY_ACCOUNT}:role/team-b-ecr-pull"
POD_IDENTITY_REPO, POD_IDENTITY_TAG = "team-b/app", "2.0"
NODE_KEY = "AKIANODETEST00000001"  # the node's access key id (the kubelet's environment)
NODE_IMAGE_REPO, NODE_IMAGE_TAG = "team/app", "v1"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
STATUS_LINE = "ecr-kubelet node test: running"  # what tests/node/hello prints
BIN_DIR = "/etc/eks/image-credential-provider"  # where the package links the binary (EKS AMIs' path)
METRICS_FILE = "/var/lib/ecr-kubelet-node-test/metrics.prom"
SA_EXAMPLES = REPO / "examples" / "credentialproviders"
WAIT = 180.0  # bound on each wait for a state change (a busy 2-core machine)

T = TypeVar("T")


class Skip(Exception):
    """The machine lacks a kernel feature the test needs."""


class Failed(Exception):
    """A check failed."""


def log(message: str) -> None:
    print(f"node test: {message}", flush=True)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT, interval: float = 0.2) -> T:
    """Poll `probe` until it returns a value other than None (bounded); Failed after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)  # polling a state, not a synchronisation by time


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, text=True, capture_output=True, check=False, **kwargs)
    if result.returncode != 0:
        raise Failed(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result


# ---- processes and mounts, undone by PID / mount point -----------------------------------------

class Stack:
    """What the test started and mounted, undone in reverse order."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.mounts: list[str] = []
        self.cgroup_root = ""

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              stdout: int | None = None) -> subprocess.Popen[bytes]:
        logfile = (self.work / "logs" / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, env=env, stdout=stdout if stdout is not None else logfile,
                                stderr=logfile, stdin=subprocess.DEVNULL)
        self.procs.append((name, proc))
        return proc

    def stop(self, name: str) -> None:
        for entry in [e for e in self.procs if e[0] == name]:
            _terminate(entry[1])
            self.procs.remove(entry)

    def mount(self, argv: list[str], target: str) -> None:
        run(["mount", *argv, target])
        self.mounts.append(target)

    def close(self) -> None:
        for _name, proc in reversed(self.procs):
            _terminate(proc)
        self.procs.clear()
        # Containers and shims started by containerd: every other process of this PID namespace.
        for pid in _namespace_pids():
            _kill_pid(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _namespace_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in _namespace_pids():
            _kill_pid(pid, signal.SIGKILL)
        while _namespace_pids() and time.monotonic() < deadline + 10:
            time.sleep(0.1)
        _remove_cgroups(self.cgroup_root)
        # Mounts containerd and the kubelet made under the work directory, then ours.
        for target in sorted(_mounts_under(str(self.work)), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)
        for target in reversed(self.mounts):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)
        self.mounts.clear()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _kill_pid(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, sig)


def _namespace_pids() -> list[int]:
    """Every process of our PID namespace but us (we are its PID 1; /proc is this namespace's)."""
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                pids.append(int(entry))
            else:
                with suppress(ChildProcessError):
                    os.waitpid(int(entry), os.WNOHANG)  # a reparented orphan: reap it
    return pids


def _mounts_under(prefix: str) -> list[str]:
    targets = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if target.startswith(prefix + "/"):
            targets.append(target)
    return targets


def make_cgroups(root: str) -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy; a new cpuset inherits nothing in v1."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if not (hierarchy / "cgroup.procs").exists():
            continue
        top = hierarchy / root.strip("/")
        top.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (top / name).exists() and not (top / name).read_text().strip():
                (top / name).write_text((hierarchy / name).read_text())


def _remove_cgroups(root: str) -> None:
    """The cgroups the kubelet and runc made under our cgroupRoot, in every v1 hierarchy (these are
    the machine's: the mount namespace does not make them private)."""
    if not root:
        return
    tops = [hierarchy / root.strip("/") for hierarchy in Path("/sys/fs/cgroup").iterdir()]
    # A cgroup whose last process just died stays busy for a moment: retry, bounded.
    deadline, error = time.monotonic() + 30, ""
    while any(top.is_dir() for top in tops) and time.monotonic() < deadline:
        for top in (t for t in tops if t.is_dir()):
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
                try:
                    os.rmdir(dirpath)
                except OSError as exc:
                    error = f"{dirpath}: {exc}"
        time.sleep(0.2)  # polling the cgroups' state
    if any(top.is_dir() for top in tops):
        log(f"warning: cgroups under {root} not removed ({error})")


# ---- images ------------------------------------------------------------------------------------

def build_hello(work: Path) -> bytes:
    out = work / "hello"
    env = dict(os.environ, CGO_ENABLED="0")
    run(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(out), "."], cwd=REPO / "tests/node/hello", env=env)
    return out.read_bytes()


def _tar_layer(files: dict[str, tuple[bytes, int]]) -> tuple[bytes, bytes]:
    """(uncompressed tar, gzip) of `files` (path -> (content, mode)), reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, (data, mode) in sorted(files.items()):
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime = len(data), mode, 0
            archive.addfile(member, io.BytesIO(data))
    return raw.getvalue(), gzip.compress(raw.getvalue(), mtime=0)


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def make_image(files: dict[str, tuple[bytes, int]]) -> tuple[bytes, dict[str, bytes]]:
    """An OCI image (manifest, blobs by digest) of one layer whose entrypoint is /hello."""
    tar, layer = _tar_layer(files)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [_digest(tar)]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                   "digest": _digest(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": len(layer),
                    "digest": _digest(layer)}],
    }).encode()
    return manifest, {_digest(config): config, _digest(layer): layer}


def oci_archive(path: Path, name: str, manifest: bytes, blobs: dict[str, bytes]) -> None:
    """An OCI image layout tar that `ctr images import` names `name`."""
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "size": len(manifest),
        "digest": _digest(manifest),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.split(":")[-1]},
    }]}).encode()
    entries = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index,
               f"blobs/sha256/{_digest(manifest)[7:]}": manifest}
    entries.update({f"blobs/sha256/{d[7:]}": b for d, b in blobs.items()})
    with tarfile.open(path, "w") as archive:
        for entry, data in entries.items():
            member = tarfile.TarInfo(entry)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))


# ---- the registry ------------------------------------------------------------------------------

class Registry:
    """Debian's docker-registry on 127.0.0.1:443 of our network namespace, htpasswd user AWS."""

    def __init__(self, stack: Stack, password: str, names: list[str]) -> None:
        from registry_server import REGISTRY_BINARY, make_tls

        self.dir = stack.work / "registry"
        self.dir.mkdir()
        self.password = password
        make_tls(self.dir, names)
        self.ca = self.dir / "ca.pem"
        self.log = stack.work / "logs" / "registry.log"
        import bcrypt  # the registry accepts bcrypt entries only

        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (self.dir / "htpasswd").write_text(f"AWS:{hashed}\n")
        config = {  # JSON is YAML
            "version": 0.1,
            "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.dir / "data")}},
            "http": {"addr": "127.0.0.1:443", "secret": secrets.token_hex(16),
                     "tls": {"certificate": str(self.dir / "server.pem"), "key": str(self.dir / "server.key")}},
            "auth": {"htpasswd": {"realm": "ecr-kubelet-node-test", "path": str(self.dir / "htpasswd")}},
        }
        (self.dir / "config.yml").write_text(json.dumps(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "OTEL_"))}
        self.proc = stack.start("registry", [REGISTRY_BINARY, "serve", str(self.dir / "config.yml")], env=env)
        self._context = ssl.create_default_context(cafile=str(self.ca))
        wait_for("the registry to answer", self._up, timeout=60)

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
        auth = base64.b64encode(f"AWS:{self.password}".encode()).decode()
        request = urllib.request.Request(f"https://127.0.0.1{path}", data=body, method=method,
                                         headers={"Authorization": f"Basic {auth}", **(headers or {})})
        try:
            with urllib.request.urlopen(request, context=self._context, timeout=30) as response:
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers)

    def _up(self) -> bool | None:
        if self.proc.poll() is not None:
            raise Failed(f"docker-registry exited {self.proc.returncode}; see {self.log}")
        try:
            return True if self._request("GET", "/v2/")[0] == 200 else None
        except OSError:
            return None

    def push(self, repository: str, tag: str, manifest: bytes, blobs: dict[str, bytes]) -> None:
        for digest, blob in blobs.items():
            status, headers = self._request("POST", f"/v2/{repository}/blobs/uploads/")
            if status != 202:
                raise Failed(f"registry answered {status} to a blob upload")
            location = headers["Location"]
            location = "/" + location.split("://", 1)[1].split("/", 1)[1] if "://" in location else location
            separator = "&" if "?" in location else "?"
            status, _ = self._request("PUT", f"{location}{separator}digest={digest}", blob,
                                      {"Content-Type": "application/octet-stream"})
            if status != 201:
                raise Failed(f"registry answered {status} to a blob upload")
        status, _ = self._request("PUT", f"/v2/{repository}/manifests/{tag}", manifest,
                                  {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        if status != 201:
            raise Failed(f"registry answered {status} to a manifest upload")

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def manifest_fetches(self, repository: str, reference: str) -> list[dict[str, Any]]:
        """The registry's log of successful manifest requests for repository:reference."""
        uri = f"/v2/{repository}/manifests/{reference}"
        return [e for e in self.entries() if e.get("http.request.uri") == uri
                and e.get("http.response.status") == 200 and e.get("msg") == "response completed"]


# ---- the AWS stub ------------------------------------------------------------------------------

class Stub:
    def __init__(self, stack: Stack) -> None:
        proc = stack.start("stub", [sys.executable, str(REPO / "tests/stub_server.py"), "--port", "0"],
                           stdout=subprocess.PIPE)
        assert proc.stdout is not None
        self.url = proc.stdout.readline().decode().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            raise Failed("the AWS stub did not start")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def configure(self, **settings: Any) -> None:
        self._call("POST", "/_stub/config", settings)

    def calls(self) -> list[dict[str, Any]]:
        calls = self._call("GET", "/_stub/calls")
        return list(calls["calls"] if isinstance(calls, dict) else calls)


# ---- containerd --------------------------------------------------------------------------------

class Containerd:
    def __init__(self, stack: Stack, registry: Registry, hosts: list[str]) -> None:
        base = stack.work / "containerd"
        self.socket = base / "containerd.sock"
        certs = base / "certs.d"
        for host in hosts:
            (certs / host).mkdir(parents=True)
            (certs / host / "hosts.toml").write_text(
                f'server = "https://{host}"\n\n[host."https://{host}"]\n'
                f'  capabilities = ["pull", "resolve"]\n  ca = "{registry.ca}"\n')
        (base / "cni").mkdir()
        config = f"""version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine forbids lowering oom_score_adj: without this, sandboxes fail to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{base}/cni"
    conf_dir = "{base}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"""
        (base / "config.toml").write_text(config)
        self.proc = stack.start("containerd", ["containerd", "--config", str(base / "config.toml")])
        wait_for("containerd's socket", self._up, timeout=60)

    def _up(self) -> bool | None:
        if self.proc.poll() is not None:
            raise Failed(f"containerd exited {self.proc.returncode}")
        ok = subprocess.run(self.ctr("version"), capture_output=True, check=False).returncode == 0
        return True if ok else None

    def ctr(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args]


# ---- the kubelet -------------------------------------------------------------------------------

def kubelet_config(work: Path, sock: Path, cgroup_root: str, static_pods: Path | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": "127.0.0.1", "readOnlyPort": 10255, "healthzBindAddress": "127.0.0.1",
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs", "cgroupRoot": cgroup_root, "failCgroupV1": False, "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{sock}", "podLogsDir": str(work / "pod-logs"),
        "fileCheckFrequency": "1s", "syncFrequency": "5s", "resolvConf": "",
        # The machine's disks are shared: never evict or collect because of them.
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "localStorageCapacityIsolation": False,
    }
    if static_pods is not None:
        config["staticPodPath"] = str(static_pods)
    return config


def provider_config(example: Path, stub_url: str) -> dict[str, Any]:
    """The shipped example, unchanged but for the AWS endpoints (added to each provider's env)."""
    import yaml

    config = yaml.safe_load(example.read_text())
    for provider in config["providers"]:
        provider["env"] = [*provider.get("env", []),
                           {"name": "AWS_ENDPOINT_URL_ECR", "value": stub_url},
                           {"name": "AWS_ENDPOINT_URL_STS", "value": stub_url},
                           {"name": "AWS_ENDPOINT_URL_EKS_AUTH", "value": stub_url}]
    return dict(config)


class Kubelet:
    def __init__(self, stack: Stack, kube: Path, name: str, config: dict[str, Any],
                 provider: dict[str, Any] | list[str], kubeconfig: Path | None = None,
                 node_env: dict[str, str] | None = None) -> None:
        """`provider`: a CredentialProviderConfig (written here; the plugin from the package's BIN_DIR),
        or the two credential provider flags as an installer configured them. `node_env`: more of the
        node's environment (what instance metadata would tell the plugin)."""
        self.dir = stack.work / name
        self.dir.mkdir()
        (self.dir / "config.json").write_text(json.dumps(config))
        if isinstance(provider, dict):
            (self.dir / "credential-providers.json").write_text(json.dumps(provider))
            provider = ["--image-credential-provider-config", str(self.dir / "credential-providers.json"),
                        "--image-credential-provider-bin-dir", BIN_DIR]
        argv = [str(kube / "kubelet"), "--config", str(self.dir / "config.json"), "--root-dir", str(self.dir / "root"),
                "--hostname-override", NODE, "--v=2", *provider]
        if kubeconfig is not None:
            argv += ["--kubeconfig", str(kubeconfig)]
        # The node's identity, as an instance profile would give it; the kubelet hands its environment
        # to the plugin (with the provider's env on top). No metadata service: the chain stops here.
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
               "AWS_ACCESS_KEY_ID": NODE_KEY, "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
               "AWS_EC2_METADATA_DISABLED": "true", "ECR_KUBELET_METRICS_FILE": METRICS_FILE, **(node_env or {})}
        self.log = stack.work / "logs" / f"{name}.log"
        self.proc = stack.start(name, argv, env=env)
        wait_for(f"{name}'s health endpoint", self._healthy, timeout=120)

    def _healthy(self) -> bool | None:
        if self.proc.poll() is not None:
            raise Failed(f"the kubelet exited {self.proc.returncode}; see {self.log}")
        try:
            with urllib.request.urlopen("http://127.0.0.1:10248/healthz", timeout=5) as response:
                return True if response.status == 200 else None
        except OSError:
            return None

    def pods(self) -> list[dict[str, Any]]:
        if self.proc.poll() is not None:
            raise Failed(f"the kubelet exited {self.proc.returncode}; see {self.log}")
        with urllib.request.urlopen("http://127.0.0.1:10255/pods", timeout=10) as response:
            return list(json.loads(response.read()).get("items") or [])

    def pod(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.pods() if p["metadata"]["name"] == name), None)


def container_state(pod: dict[str, Any] | None) -> tuple[str, str]:
    """("running"|"waiting"|"terminated"|"", reason) of the pod's first container."""
    statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
    if not statuses:
        return "", ""
    state = statuses[0].get("state") or {}
    for key in ("running", "waiting", "terminated"):
        if key in state:
            return key, str((state[key] or {}).get("reason", ""))
    return "", ""


def pod_manifest(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"hostNetwork": True, "containers": [{"name": "app", "image": image, **spec}]}}


def plugin_runs() -> int:
    """Runs of the plugin, from its metrics file (each run adds one to ecr_kubelet_requests_total)."""
    path = Path(METRICS_FILE)
    if not path.exists():
        return 0
    total = 0.0
    for line in path.read_text().splitlines():
        if line.startswith("ecr_kubelet_requests_total"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


# ---- the API server ----------------------------------------------------------------------------

class ApiServer:
    def __init__(self, stack: Stack, kube: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        base = stack.work / "apiserver"
        base.mkdir()
        self.etcd = stack.start("etcd", [
            "etcd", "--name", "node-test", "--data-dir", str(base / "etcd"),
            "--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
            "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "node-test=http://127.0.0.1:2380"])
        wait_for("etcd", self._etcd_up, timeout=60)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (base / "sa.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
        self.admin_token, self.node_token = secrets.token_hex(16), secrets.token_hex(16)
        (base / "tokens.csv").write_text(f'{self.admin_token},admin,admin,"system:masters"\n'
                                         f'{self.node_token},system:node:{NODE},{NODE},"system:nodes"\n')
        self.proc = stack.start("kube-apiserver", [
            str(kube / "kube-apiserver"), "--etcd-servers", "http://127.0.0.1:2379",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", "6443",
            "--cert-dir", str(base / "pki"), "--token-auth-file", str(base / "tokens.csv"),
            "--authorization-mode", "Node,RBAC", "--anonymous-auth=false",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(base / "sa.key"),
            "--service-account-signing-key-file", str(base / "sa.key"),
            "--service-cluster-ip-range", "10.0.0.0/24"])  # a setting only: nothing is sent there
        self._context = ssl.create_default_context()
        self._context.check_hostname = False
        self._context.verify_mode = ssl.CERT_NONE  # its own self-signed certificate, on loopback
        wait_for("kube-apiserver to be ready", self._ready, timeout=240)
        self.kubeconfig = base / "kubelet.kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:6443",
                                                      "insecure-skip-tls-verify": True}}],
            "users": [{"name": NODE, "user": {"token": self.node_token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": NODE}}],
            "current-context": "test"}))

    def _etcd_up(self) -> bool | None:
        if self.etcd.poll() is not None:
            raise Failed(f"etcd exited {self.etcd.returncode}")
        try:
            with urllib.request.urlopen("http://127.0.0.1:2379/health", timeout=5) as response:
                return True if b'"true"' in response.read() else None
        except OSError:
            return None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"https://127.0.0.1:6443{path}", data=data, method=method,
                                         headers={"Authorization": f"Bearer {self.admin_token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self._context, timeout=30) as response:
                text = response.read()
                return response.status, (json.loads(text) if text.startswith(b"{") else text.decode())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def _ready(self) -> bool | None:
        if self.proc.poll() is not None:
            raise Failed(f"kube-apiserver exited {self.proc.returncode}")
        try:
            return True if self.request("GET", "/readyz")[0] == 200 else None
        except OSError:
            return None

    def create(self, obj: dict[str, Any]) -> None:
        """POST one object to its collection (the few kinds the shipped manifests hold)."""
        kind, meta = obj["kind"], obj["metadata"]
        ns = meta.get("namespace", "default")
        paths = {"Namespace": "/api/v1/namespaces",
                 "ServiceAccount": f"/api/v1/namespaces/{ns}/serviceaccounts",
                 "ConfigMap": f"/api/v1/namespaces/{ns}/configmaps",
                 "Pod": f"/api/v1/namespaces/{ns}/pods",
                 "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                 "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"}
        status, answer = self.request("POST", paths[kind], obj)
        if status == 409 and kind.startswith("Cluster"):  # shipped twice (examples and deploy): apply it again
            current = self.request("GET", f"{paths[kind]}/{meta['name']}")[1]
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            status, answer = self.request("PUT", f"{paths[kind]}/{meta['name']}", obj)
            status = 201 if status == 200 else status
        if status != 201:
            raise Failed(f"creating {kind} {meta['name']}: {status} {answer}")

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        status, answer = self.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
        return answer if status == 200 and isinstance(answer, dict) else None

    def delete_pods(self, namespace: str) -> None:
        """Delete the namespace's pods and wait until the kubelet has stopped them (it confirms the deletion)."""
        status, answer = self.request("GET", f"/api/v1/namespaces/{namespace}/pods")
        if status != 200:
            raise Failed(f"listing the pods of {namespace}: {status} {answer}")
        for pod in answer["items"]:
            name = pod["metadata"]["name"]
            status, answer = self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                                          {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 1})
            if status not in {200, 202, 404}:
                raise Failed(f"deleting pod {namespace}/{name}: {status} {answer}")
        wait_for(f"the pods of {namespace} to go", lambda: True if not self.request(
            "GET", f"/api/v1/namespaces/{namespace}/pods")[1]["items"] else None)

    def namespace(self, stack: Stack, name: str) -> None:
        """A namespace with what kube-controller-manager would publish in it (the pods' API access volume
        reads kube-root-ca.crt)."""
        self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        ca = (stack.work / "apiserver" / "pki" / "apiserver.crt").read_text()
        self.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "kube-root-ca.crt", "namespace": name}, "data": {"ca.crt": ca}})


# ---- the test ----------------------------------------------------------------------------------

def enter_namespaces(argv: list[str]) -> int:
    """Re-run this script as PID 1 of new network, mount and PID namespaces."""
    if not shutil.which("unshare"):
        raise Skip("no unshare command (util-linux)")
    probe = subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "true"], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        raise Skip(f"cannot create network, mount and PID namespaces: {probe.stderr.decode().strip()}")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise Skip("the kernel has no overlay filesystem")
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        raise Skip("no cgroup hierarchy mounted at /sys/fs/cgroup")
    env = dict(os.environ, **{NAMESPACE_MARK: "1"})
    return subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc",
                           "--propagation", "private", sys.executable, *argv], env=env, check=False).returncode


def private_root(stack: Stack, hosts: list[str]) -> None:
    """Loopback up; /etc, /usr, /var as overlays (their changes stay in the work directory); /run fresh."""
    run(["ip", "link", "set", "lo", "up"])
    for top in ("etc", "usr", "var"):
        upper, scratch = stack.work / "overlay" / top, stack.work / "overlay" / f".{top}"
        upper.mkdir(parents=True)
        scratch.mkdir()
        stack.mount(["-t", "overlay", "overlay", "-o", f"lowerdir=/{top},upperdir={upper},workdir={scratch}"],
                    f"/{top}")
    stack.mount(["-t", "tmpfs", "-o", "mode=0755", "tmpfs"], "/run")
    Path("/etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost\n"
                                  + "".join(f"127.0.0.1 {host}\n" for host in hosts))


def install_deb(release: Path) -> None:
    debs = sorted(release.glob("ecr-kubelet_*_amd64.deb"))
    if not debs:
        raise Failed(f"no ecr-kubelet_*_amd64.deb in {release} (scripts/release --arch amd64)")
    run(["dpkg", "-i", str(debs[-1])], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    link = Path(BIN_DIR) / "ecr-credential-provider"
    if not link.is_symlink():
        raise Failed(f"the package did not link {link}")
    Path(METRICS_FILE).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    log(f"installed {debs[-1].name} with dpkg; {link} -> {os.readlink(link)}")


def kubelet_log_has(kubelet: Kubelet, *needles: str) -> bool | None:
    text = kubelet.log.read_text(errors="replace")
    return True if any(all(n in line for n in needles) for line in text.splitlines()) else None


def node_mode(stack: Stack, kube: Path, stub: Stub, registry: Registry, containerd: Containerd,
              password: str) -> None:
    import yaml

    static = stack.work / "manifests"
    static.mkdir()
    provider = provider_config(SA_EXAMPLES / "eks-default.yaml", stub.url)
    kubelet = Kubelet(stack, kube, "kubelet-standalone",
                      kubelet_config(stack.work, containerd.socket, stack.cgroup_root, static), provider)

    # (a) node mode: the static pod's image is pulled with the node's identity and runs.
    image = f"{NODE_HOST}/{NODE_IMAGE_REPO}:{NODE_IMAGE_TAG}"
    (static / "app.yaml").write_text(yaml.safe_dump(pod_manifest("app", image)))
    started = time.monotonic()
    pod = wait_for("the static pod to run", lambda: (lambda p: p if container_state(p)[0] == "running"
                                                     else _pull_failed(p))(kubelet.pod(f"app-{NODE}")))
    calls = [c for c in stub.calls() if c["action"] == "GetAuthorizationToken" and c["status"] == 200]
    if not any(c["region"] == REGION and c["password"] == password
               and c["access_key_id"] == NODE_KEY for c in calls):
        raise Failed(f"no GetAuthorizationToken with the node's identity in the stub's log: {calls}")
    if not registry.manifest_fetches(NODE_IMAGE_REPO, NODE_IMAGE_TAG):
        raise Failed("the registry served no manifest of the image")
    if plugin_runs() < 1:  # the later checks count runs in this file: it must count
        raise Failed(f"the plugin's metrics file {METRICS_FILE} counted no run")
    logs = wait_for("the container's output", lambda: _container_log(stack.work, "app"), timeout=60)
    if STATUS_LINE not in logs:
        raise Failed(f"the container did not print its line: {logs!r}")
    log(f"ok: node mode: static pod {pod['metadata']['name']} pulled {image} with the node's identity "
        f"(stub: GetAuthorizationToken by the node's key; registry: manifest served) and runs "
        f"({time.monotonic() - started:.1f} s); plugin runs: {plugin_runs()}")

    # (b) a token the registry does not know: 401, and the kubelet reports ErrImagePull.
    stub.configure(password="wrong-" + secrets.token_hex(8))
    wrong_image = f"{WRONG_HOST}/{NODE_IMAGE_REPO}:{NODE_IMAGE_TAG}"
    (static / "wrong.yaml").write_text(yaml.safe_dump(pod_manifest("wrong", wrong_image)))
    wait_for("the kubelet to report ErrImagePull", lambda: kubelet_log_has(
        kubelet, "ErrImagePull", WRONG_HOST, "401 Unauthorized"))
    state = wait_for("the pod's image pull error", lambda: (lambda s: s if s[1] in {
        "ErrImagePull", "ImagePullBackOff"} else None)(container_state(kubelet.pod(f"wrong-{NODE}"))))
    if not any(c["registry_ids"] == [WRONG_ACCOUNT] and c["status"] == 200 for c in stub.calls()):
        raise Failed(f"no GetAuthorizationToken for {WRONG_ACCOUNT} in the stub's log")
    denied = [e for e in registry.entries() if "authentication challenge" in str(e.get("msg", e.get("err.message", "")))
              or e.get("http.response.status") == 401]
    if not any("invalid authorization credential" in json.dumps(e) for e in denied):
        raise Failed("the registry logged no rejected credential")
    log(f"ok: wrong password: registry rejected the credential (401), kubelet reports {state[1]} "
        "and logs ErrImagePull with the registry's 401")
    stub.configure(password=password)

    # Remove the static pods and wait until the kubelet has stopped them, then stop it.
    for manifest in static.iterdir():
        manifest.unlink()
    wait_for("the static pods to go", lambda: True if not kubelet.pods() else None)
    stack.stop("kubelet-standalone")


def release_sums(release: Path) -> dict[str, str]:
    """SHA256SUMS of the release: file name -> sha256."""
    lines = (release / "SHA256SUMS").read_text().splitlines()
    return {line.split()[1].lstrip("*"): line.split()[0] for line in lines if line.strip()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def single_file_route(stack: Stack, kube: Path, stub: Stub, containerd: Containerd, release: Path) -> None:
    """(e) deploy/node/install.sh with the release binary: the kubelet takes its flags from the drop-in."""
    binary = release / "ecr-credential-provider-linux-amd64"
    sums = release_sums(release)
    config = stack.work / "single-file-config.json"
    config.write_text(json.dumps(provider_config(SA_EXAMPLES / "eks-default.json", stub.url)))
    bin_dir = "/etc/kubernetes/image-credential-provider"  # not the package's: both stay installed
    run(["bash", str(REPO / "deploy/node/install.sh"), "--binary", str(binary), "--sha256", sums[binary.name],
         "--config", str(config), "--bin-dir", bin_dir])
    dropin = Path("/etc/systemd/system/kubelet.service.d/30-ecr-credential-provider.conf").read_text()
    line = next(x for x in dropin.splitlines() if x.startswith("Environment="))
    flags = line.split("=", 2)[2].rstrip('"').split()
    installed = Path(bin_dir) / "ecr-credential-provider"
    if installed.is_symlink() or _sha256(installed) != sums[binary.name]:
        raise Failed(f"install.sh did not install the release binary at {installed}")
    static = stack.work / "manifests-single-file"
    static.mkdir()
    kubelet = Kubelet(stack, kube, "kubelet-single-file",
                      kubelet_config(stack.work, containerd.socket, stack.cgroup_root, static), flags)
    runs = plugin_runs()
    image = f"{SINGLE_HOST}/{NODE_IMAGE_REPO}:{NODE_IMAGE_TAG}"
    (static / "single.json").write_text(json.dumps(pod_manifest("single", image)))
    wait_for("the single-file route's pod to run", lambda: True if container_state(
        kubelet.pod(f"single-{NODE}"))[0] == "running" else _pull_failed(kubelet.pod(f"single-{NODE}")))
    if plugin_runs() <= runs or not any(c["registry_ids"] == [SINGLE_ACCOUNT] and c["status"] == 200
                                        for c in stub.calls()):
        raise Failed("the single-file install's plugin did not fetch the token")
    log(f"ok: single-file route: install.sh installed the release binary in {bin_dir} and a drop-in "
        f"({' '.join(flags)}); static pod pulled {image}")
    for manifest in static.iterdir():
        manifest.unlink()
    wait_for("the static pods to go", lambda: True if not kubelet.pods() else None)
    stack.stop("kubelet-single-file")


def daemonset_route(stack: Stack, api: ApiServer, stub: Stub, containerd: Containerd, release: Path,
                    namespace: str, account: str) -> None:
    """(e) the DaemonSet: the installer image imported from its OCI archive, the DaemonSet's pod run by
    the kubelet with the host paths it mounts (on a node whose package was removed), then a pull."""
    import yaml

    run(["dpkg", "-r", "ecr-kubelet"])
    link = Path(BIN_DIR) / "ecr-credential-provider"
    if link.exists() or link.is_symlink():
        raise Failed(f"dpkg -r left {link}")
    archives = sorted(release.glob("ecr-credential-provider-*-linux-amd64.oci.tar"))
    if not archives:
        raise Failed(f"no installer image archive in {release}")
    kustomize = shutil.which("kustomize") or str(REPO / ".venv/bin/kustomize")
    rendered = list(yaml.safe_load_all(run([kustomize, "build", str(REPO / "deploy/kubernetes")]).stdout))
    daemonset = next(o for o in rendered if o["kind"] == "DaemonSet")
    template = daemonset["spec"]["template"]
    image = template["spec"]["initContainers"][0]["image"]
    # The archive's ref.name ("ecr-credential-provider:0.1.0") would become docker.io/library/...; an
    # operator imports it under the name the DaemonSet uses. containerd 1.6's CRI keeps resolving a
    # re-tagged image by its first name, so the copy imported names it in its index (blobs unchanged).
    named = stack.work / "installer-image.oci.tar"
    with tarfile.open(archives[-1]) as source, tarfile.open(named, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member) if member.isfile() else None
            if member.name.lstrip("./") == "index.json" and data is not None:
                index = json.loads(data.read())
                for entry in index["manifests"]:
                    entry.setdefault("annotations", {})["io.containerd.image.name"] = image
                body = json.dumps(index).encode()
                member.size = len(body)
                target.addfile(member, io.BytesIO(body))
            else:
                target.addfile(member, data)
    run(containerd.ctr("images", "import", str(named)))
    for obj in rendered:
        if obj["kind"] in {"Namespace", "ConfigMap", "ClusterRole", "ClusterRoleBinding"}:
            api.create(obj)
    # What kube-controller-manager would make in a new namespace.
    api.create({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": daemonset["metadata"]["namespace"]}})
    # No DaemonSet controller here: its pod, as the controller would make it for this node. No CNI: the
    # host's network.
    ns = daemonset["metadata"]["namespace"]
    spec = dict(template["spec"], nodeName=NODE, hostNetwork=True)
    api.create({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "installer", "namespace": ns, "labels": template["metadata"]["labels"]},
                "spec": spec})
    wait_for("the installer pod to run", lambda: True if container_state(api.pod(ns, "installer"))[0] == "running"
             else _pull_failed(api.pod(ns, "installer")))
    if link.is_symlink() or _sha256(link) != release_sums(release)["ecr-credential-provider-linux-amd64"]:
        raise Failed(f"the installer did not put the release binary at {link}")
    runs = plugin_runs()
    image = f"{DAEMONSET_HOST}/{NODE_IMAGE_REPO}:{NODE_IMAGE_TAG}"
    workload = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after-installer", "namespace": namespace},
                "spec": {"serviceAccountName": account, "nodeName": NODE, "hostNetwork": True,
                         "containers": [{"name": "app", "image": image}]}}
    api.create(workload)
    wait_for("a pull with the installed binary", lambda: True if container_state(
        api.pod(namespace, "after-installer"))[0] == "running" else _pull_failed(api.pod(namespace, "after-installer")))
    if plugin_runs() <= runs or not any(c["registry_ids"] == [DAEMONSET_ACCOUNT] and c["status"] == 200
                                        for c in stub.calls()):
        raise Failed("the DaemonSet-installed plugin did not fetch the token")
    log(f"ok: DaemonSet route: installer image ({archives[-1].name}) ran as the kubelet's pod and put the release "
        f"binary at {link}; then a pod pulled from {DAEMONSET_HOST} with it")


def _container_log(work: Path, container: str) -> str | None:
    for path in (work / "pod-logs").glob(f"*/{container}/*.log"):
        text = path.read_text(errors="replace")
        if STATUS_LINE in text:
            return text
    return None


def _eks_cluster_name(provider: dict[str, Any]) -> str:
    """The cluster the shipped config names (its env), for the stub's associations."""
    from ecr_kubelet.options import EKS_CLUSTER_NAME_VARIABLE

    (entry,) = provider["providers"]
    return str(next(e["value"] for e in entry["env"] if e["name"] == EKS_CLUSTER_NAME_VARIABLE))


def pod_identity_mode(stack: Stack, kube: Path, api: ApiServer, stub: Stub, registry: Registry,
                      containerd: Containerd, password: str) -> None:
    """(f) EKS Pod Identity: the shipped pod-identity.yaml and its RBAC; a service account without a role
    annotation, whose token (audience pods.eks.amazonaws.com) the plugin exchanges with eks-auth for its
    association's role. The stub gives the registry's password to eks-auth's credentials alone, so a pull
    proves the role fetched the token; then a service account without association falls back to the node
    (its token is refused: 401) and, under --sa-without-role=fail, gets no credentials at all."""
    import yaml

    from stub_server import POD_IDENTITY_AUDIENCE

    for obj in yaml.safe_load_all((SA_EXAMPLES / "rbac" / "pod-identity-rbac.yaml").read_text()):
        api.create(obj)
    provider = provider_config(SA_EXAMPLES / "pod-identity.yaml", stub.url)
    cluster = _eks_cluster_name(provider)
    namespace, associated, unassociated = "team-b", "app-puller", "no-association"
    stub.configure(pod_identity_associations={cluster: {f"{namespace}/{associated}": POD_IDENTITY_ROLE}},
                   password_pod_identity_only=True)
    # eks-auth is called in the node's region: instance metadata would give it; here the node's environment.
    node_env = {"AWS_REGION": REGION}
    Kubelet(stack, kube, "kubelet-pod-identity", kubelet_config(stack.work, containerd.socket, stack.cgroup_root,
                                                                None),
            provider, kubeconfig=api.kubeconfig, node_env=node_env)
    wait_for("the node to register", lambda: True if api.request("GET", f"/api/v1/nodes/{NODE}")[0] == 200 else None)
    api.namespace(stack, namespace)
    for account in (associated, unassociated):  # no role annotation on either
        api.create({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": account, "namespace": namespace}})
    image = f"{POD_IDENTITY_HOST}/{POD_IDENTITY_REPO}:{POD_IDENTITY_TAG}"

    def pod(name: str, account: str) -> dict[str, Any]:  # no scheduler, no CNI: names its node, host network
        # Always: every pod pulls, though containerd has the image after the first (a new kubelet would
        # count it as preloaded and start it without asking for credentials).
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                "spec": {"serviceAccountName": account, "nodeName": NODE, "hostNetwork": True,
                         "containers": [{"name": "app", "image": image, "imagePullPolicy": "Always"}]}}

    def pull_refused(name: str) -> tuple[str, str]:
        return wait_for(f"pod {namespace}/{name}'s image pull error", lambda: (lambda s: s if s[1] in {
            "ErrImagePull", "ImagePullBackOff"} else None)(container_state(api.pod(namespace, name))))

    # (f) the associated service account: one exchange, then ECR with the association's credentials.
    mark, started = len(stub.calls()), time.monotonic()
    api.create(pod("app", associated))
    wait_for(f"pod {namespace}/app to run", lambda: True if container_state(api.pod(namespace, "app"))[0] == "running"
             else _pull_failed(api.pod(namespace, "app")))
    calls = stub.calls()[mark:]
    subject = f"system:serviceaccount:{namespace}:{associated}"
    exchanges = [c for c in calls if c["service"] == "eks-auth"]
    if len(exchanges) != 1:
        raise Failed(f"expected exactly one AssumeRoleForPodIdentity call, got {exchanges}")
    (exchange,) = exchanges
    if (exchange["status"], exchange["cluster"], exchange["region"], exchange["access_key_id"]) != \
            (200, cluster, REGION, NODE_KEY) or exchange["role_arn"] != POD_IDENTITY_ROLE \
            or exchange["web_identity"]["sub"] != subject \
            or POD_IDENTITY_AUDIENCE not in json.dumps(exchange["web_identity"]["aud"]):
        raise Failed(f"not the exchange of {subject}'s token (audience {POD_IDENTITY_AUDIENCE}) for cluster "
                     f"{cluster}, signed by the node in {REGION}: {exchange}")
    ecr = [c for c in calls if c["action"] == "GetAuthorizationToken"]
    if not ecr or any(c["access_key_id"] != exchange["issued_access_key_id"] or c["status"] != 200
                      or c["password"] != password or c["registry_ids"] != [POD_IDENTITY_ACCOUNT] for c in ecr):
        raise Failed(f"ECR was not asked with the association's credentials only: {ecr}")
    if any(c["action"] == "AssumeRoleWithWebIdentity" for c in calls):
        raise Failed(f"the plugin used IRSA for a service account without annotation: {calls}")
    if not registry.manifest_fetches(POD_IDENTITY_REPO, POD_IDENTITY_TAG):
        raise Failed("the registry served no manifest of the Pod Identity pod's image")
    log(f"ok: EKS Pod Identity: {subject}'s token (audience {POD_IDENTITY_AUDIENCE}) exchanged once with "
        f"AssumeRoleForPodIdentity (cluster {cluster}, signed by the node) for {POD_IDENTITY_ROLE}; ECR asked "
        f"with the association's key only; {image} pulled and runs ({time.monotonic() - started:.1f} s)")

    # (g) a service account without association, shipped default (--sa-without-role node): eks-auth says
    # 404, the node's credentials fetch the token, and its password is not the registry's.
    mark = len(stub.calls())
    api.create(pod("fallback", unassociated))
    state = pull_refused("fallback")
    calls = stub.calls()[mark:]
    other = f"system:serviceaccount:{namespace}:{unassociated}"
    if not any(c["service"] == "eks-auth" and c["status"] == 404 and c["web_identity"]["sub"] == other
               for c in calls) or any(c["service"] == "eks-auth" and c["status"] == 200 for c in calls):
        raise Failed(f"no ResourceNotFoundException from eks-auth for {other}: {calls}")
    ecr = [c for c in calls if c["action"] == "GetAuthorizationToken"]
    if not ecr or any(c["access_key_id"] != NODE_KEY or c["password"] == password for c in ecr):
        raise Failed(f"the service account without association did not fall back to the node's key: {ecr}")
    log(f"ok: EKS Pod Identity, no association: eks-auth 404 for {other}, then ECR with the node's key, whose "
        f"token the registry refuses: {state[1]}")
    api.delete_pods(namespace)
    stack.stop("kubelet-pod-identity")

    # (h) the same, with the config's args adding --sa-without-role=fail: no credentials, no ECR call.
    (entry,) = provider["providers"]
    entry["args"] = [*entry.get("args", []), "--sa-without-role", "fail"]
    kubelet = Kubelet(stack, kube, "kubelet-pod-identity-fail", kubelet_config(stack.work, containerd.socket,
                                                                               stack.cgroup_root, None),
                      provider, kubeconfig=api.kubeconfig, node_env=node_env)
    mark, runs = len(stub.calls()), plugin_runs()
    api.create(pod("refused", unassociated))
    state = pull_refused("refused")
    calls = stub.calls()[mark:]
    if plugin_runs() <= runs or not any(c["service"] == "eks-auth" and c["status"] == 404 for c in calls) \
            or any(c["action"] == "GetAuthorizationToken" or c["status"] == 200 for c in calls):
        raise Failed(f"--sa-without-role=fail: expected eks-auth 404 and no ECR call: {calls}")
    wait_for("the kubelet to log the plugin's refusal", lambda: kubelet_log_has(
        kubelet, "ecr-credential-provider", POD_IDENTITY_HOST, "exit status 3"))
    log(f"ok: EKS Pod Identity, no association, --sa-without-role=fail: eks-auth 404, the plugin exits 3 (the "
        f"kubelet logs it), no ECR call, {state[1]}")
    api.delete_pods(namespace)
    stack.stop("kubelet-pod-identity-fail")
    stub.configure(password_pod_identity_only=False)


def service_account_mode(stack: Stack, kube: Path, api: ApiServer, stub: Stub, registry: Registry,
                         containerd: Containerd, password: str, release: Path) -> None:
    import yaml

    for obj in yaml.safe_load_all((SA_EXAMPLES / "rbac" / "service-account-rbac.yaml").read_text()):
        api.create(obj)
    provider = provider_config(SA_EXAMPLES / "service-account.yaml", stub.url)
    Kubelet(stack, kube, "kubelet-cluster", kubelet_config(stack.work, containerd.socket, stack.cgroup_root, None),
            provider, kubeconfig=api.kubeconfig)
    wait_for("the node to register", lambda: True if api.request("GET", f"/api/v1/nodes/{NODE}")[0] == 200 else None)

    workload = list(yaml.safe_load_all((SA_EXAMPLES / "rbac" / "example-workload.yaml").read_text()))
    account = next(o for o in workload if o["kind"] == "ServiceAccount")
    pod = next(o for o in workload if o["kind"] == "Pod")
    namespace = account["metadata"]["namespace"]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/ecr-role-arn"]
    api.namespace(stack, namespace)
    api.create(account)
    # No scheduler and no CNI: the pod names its node and uses the host's network.
    pod["spec"].update(nodeName=NODE, hostNetwork=True)
    api.create(pod)
    name = pod["metadata"]["name"]
    image = pod["spec"]["containers"][0]["image"]

    # (c) the pod's token is exchanged for its role, and the pull uses the role's token.
    started = time.monotonic()
    wait_for(f"pod {namespace}/{name} to run", lambda: True if container_state(api.pod(namespace, name))[0] == "running"
             else _pull_failed(api.pod(namespace, name)))
    calls = stub.calls()
    assumed = [c for c in calls if c["action"] == "AssumeRoleWithWebIdentity" and c["status"] == 200
               and c["role_arn"] == role]
    subject = f"system:serviceaccount:{namespace}:{account['metadata']['name']}"
    if not assumed or assumed[-1]["web_identity"]["sub"] != subject or \
            "sts.amazonaws.com" not in json.dumps(assumed[-1]["web_identity"]["aud"]):
        raise Failed(f"no AssumeRoleWithWebIdentity of {role} with {subject}'s token: {calls}")
    role_key = assumed[-1]["issued_access_key_id"]
    if not any(c["action"] == "GetAuthorizationToken" and c["access_key_id"] == role_key and c["status"] == 200
               and c["password"] == password for c in calls):
        raise Failed(f"no GetAuthorizationToken with the role's credentials: {calls}")
    repository, tag = image.split("/", 1)[1].rsplit(":", 1)
    fetches = registry.manifest_fetches(repository, tag)
    if not fetches:
        raise Failed("the registry served no manifest of the workload's image")
    log(f"ok: service-account mode: {subject}'s token exchanged for {role} (stub: AssumeRoleWithWebIdentity, "
        f"then GetAuthorizationToken with the role's key); {image} pulled and runs "
        f"({time.monotonic() - started:.1f} s)")

    # (d) another pod of the same service account pulls again: the kubelet's cache answers.
    runs, aws_calls, served = plugin_runs(), len(stub.calls()), len(fetches)
    again = json.loads(json.dumps(pod))
    again["metadata"]["name"] = name + "-again"
    again["spec"]["containers"][0]["imagePullPolicy"] = "Always"
    api.create(again)
    wait_for("the second pod to run", lambda: True if container_state(api.pod(namespace, name + "-again"))[0]
             == "running" else _pull_failed(api.pod(namespace, name + "-again")))
    if len(registry.manifest_fetches(repository, tag)) <= served:
        raise Failed("the second pod's image was not pulled again")
    if plugin_runs() != runs or len(stub.calls()) != aws_calls:
        raise Failed(f"the plugin ran again (runs {runs} -> {plugin_runs()}, AWS calls {aws_calls} -> "
                     f"{len(stub.calls())})")
    log(f"ok: kubelet cache: pod {name}-again pulled {image} again (registry: manifest served) without "
        f"running the plugin (runs stay {runs}) or calling AWS")
    daemonset_route(stack, api, stub, containerd, release, namespace, account["metadata"]["name"])


def _pull_failed(pod: dict[str, Any] | None) -> None:
    kind, reason = container_state(pod)
    if kind == "waiting" and reason in {"ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError"}:
        raise Failed(f"the pod's container is waiting: {reason}: {json.dumps(pod and pod.get('status'))}")


@contextmanager
def work_directory(keep: bool) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="ecr-kubelet-node-"))
    (work / "logs").mkdir()
    try:
        yield work
    finally:
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def inside(args: argparse.Namespace) -> int:
    hosts = [NODE_HOST, WRONG_HOST, SINGLE_HOST, DAEMONSET_HOST, POD_IDENTITY_HOST,
             "210987654321.dkr.ecr.us-west-2.amazonaws.com"]
    password = "node-test-" + secrets.token_hex(12)
    failed = False
    with work_directory(args.keep) as work:
        stack = Stack(work)
        stack.cgroup_root = f"/{work.name}"  # unique: the machine's cgroups are shared
        try:
            private_root(stack, hosts)
            make_cgroups(stack.cgroup_root)
            install_deb(args.release)
            stub = Stub(stack)
            stub.configure(password=password)
            registry = Registry(stack, password, hosts)
            hello = build_hello(work)
            pause_manifest, pause_blobs = make_image({"hello": (hello, 0o755)})
            app_manifest, app_blobs = make_image({"hello": (hello, 0o755),
                                                  "message.txt": (b"pulled from a private registry\n", 0o644)})
            registry.push(NODE_IMAGE_REPO, NODE_IMAGE_TAG, app_manifest, app_blobs)
            registry.push("team-a/app", "1.4.2", app_manifest, app_blobs)
            registry.push(POD_IDENTITY_REPO, POD_IDENTITY_TAG, app_manifest, app_blobs)
            containerd = Containerd(stack, registry, hosts)
            oci_archive(work / "pause.tar", PAUSE_IMAGE, pause_manifest, pause_blobs)
            run(containerd.ctr("images", "import", str(work / "pause.tar")))
            node_mode(stack, args.kube, stub, registry, containerd, password)
            single_file_route(stack, args.kube, stub, containerd, args.release)
            api = ApiServer(stack, args.kube)
            pod_identity_mode(stack, args.kube, api, stub, registry, containerd, password)
            service_account_mode(stack, args.kube, api, stub, registry, containerd, password, args.release)
        except Exception as exc:  # every failure ends in the same report and the same clean-up
            failed = True
            log(f"FAILED: {exc}" if isinstance(exc, Failed) else f"FAILED: {traceback.format_exc()}")
            log(f"logs: {work / 'logs'}" + ("" if args.keep else " (removed; --keep keeps them)"))
            if not args.keep:
                for path in sorted((work / "logs").glob("*.log")):
                    tail = path.read_text(errors="replace").splitlines()[-15:]
                    print(f"---- {path.name} (last lines)\n" + "\n".join(tail), flush=True)
        finally:
            stack.close()
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--release", type=Path, default=REPO / "dist" / "release",
                        help="directory holding the release .deb")
    parser.add_argument("--kube", type=Path, help="directory holding kubelet and kube-apiserver")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and its logs")
    args = parser.parse_args(argv)
    args.release = args.release.resolve()
    if os.environ.get(NAMESPACE_MARK) == "1":
        return inside(args)
    if os.geteuid() != 0:
        log("skipped: needs root (namespaces, mounts, containerd)")
        return 0
    if args.kube is None:
        out = run([str(REPO / "tests/node/build-kube")]).stdout.strip().splitlines()
        args.kube = Path(out[-1])
    forwarded = [str(Path(__file__).resolve()), "--release", str(args.release), "--kube", str(args.kube.resolve())]
    if args.keep:
        forwarded.append("--keep")
    try:
        return enter_namespaces(forwarded)
    except Skip as exc:
        log(f"skipped: {exc}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
