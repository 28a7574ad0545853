"""`ecr-credential-provider validate-config`, run as a subprocess like a user or CI would: the console
script, and the built binary over the cases the kubelet's own code judges too (tests/config_cases.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from config_cases import CASES, IDS, gate, write_case
from ecr_kubelet.validate_config import normalize_image

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "credentialproviders"
PRIVATE = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
CONSOLE_SCRIPT = Path(sys.executable).parent / "ecr-credential-provider"


def run(*args: str, command: Path = CONSOLE_SCRIPT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [str(command), "validate-config", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def check_verdict(c: dict[str, Any], tmp_path: Path, command: Path) -> None:
    """Exit status, and the error and warning lines in the case's order, as validate-config prints them."""
    result = run(str(write_case(c, tmp_path)), *([] if gate(c) else ["--disable-sa-token-gate"]), command=command)
    assert result.returncode == (1 if c["errors"] else 0), result.stderr
    errors = [line.removeprefix("error: ") for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(c["errors"]), result.stderr
    for line, (where, fragment) in zip(errors, c["errors"], strict=True):
        assert line.startswith(f"{where}: " if where else "") and fragment in line, line
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == len(c.get("warnings", [])), result.stderr
    assert len(errors) + len(warnings) == len(result.stderr.splitlines()), result.stderr
    verdict = f"INVALID: {len(errors)} error(s)" if c["errors"] else "OK: the kubelet would accept this config"
    assert verdict in result.stdout


@pytest.fixture(params=["console-script", "binary"])
def command(request: pytest.FixtureRequest) -> Path:
    """validate-config as installed (the console script), and as shipped: the binary, whose bundle must
    hold pydantic and yaml (imported only for a YAML file); skipped when it is not built (conftest)."""
    if request.param == "binary":
        path: Path = request.getfixturevalue("binary")
        return path
    return CONSOLE_SCRIPT


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_shared_case(c: dict[str, Any], command: Path, tmp_path: Path) -> None:
    check_verdict(c, tmp_path, command)


def test_no_path_is_a_usage_error(command: Path) -> None:
    usage = run(command=command)
    assert usage.returncode == 2 and usage.stdout == ""
    assert usage.stderr.startswith("ecr-credential-provider validate-config: error: usage: ")
    assert len(usage.stderr.splitlines()) == 1


def write_config(path: Path, **provider: object) -> Path:
    prov = {
        "name": "ecr-credential-provider",
        "matchImages": ["*.dkr.ecr.*.amazonaws.com", "public.ecr.aws"],
        "defaultCacheDuration": "12h",
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        **provider,
    }
    path.write_text(
        json.dumps({"apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig", "providers": [prov]})
    )
    return path


def test_valid_config_exits_zero(tmp_path: Path) -> None:
    result = run(str(write_config(tmp_path / "c.json")))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "OK: the kubelet would accept this config" in result.stdout
    assert (
        "'ecr-credential-provider': credentialprovider.kubelet.k8s.io/v1, 2 matchImages, "
        "defaultCacheDuration 12h0m0s" in result.stdout
    )


def test_directory_errors_name_files(tmp_path: Path) -> None:
    write_config(tmp_path / "10-a.json")
    write_config(tmp_path / "20-b.json")
    result = run(str(tmp_path))
    assert result.returncode == 1
    assert (
        "error: 20-b.json: providers[0].name: duplicate provider name 'ecr-credential-provider' "
        "(first at 10-a.json: providers[0])" in result.stderr
    )
    assert "10-a.json\n  20-b.json" in result.stdout


def test_image_report(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.json")
    result = run(
        str(path),
        "--image",
        f"{PRIVATE}/team/app:1.2",
        "--image",
        "public.ecr.aws/nginx/nginx",
        "--image",
        "nginx:latest",
        "--image",
        f"{PRIVATE}:443/app",
    )
    assert result.returncode == 0
    out = result.stdout
    assert (
        f"image {PRIVATE}/team/app:1.2 (sent to plugins as {PRIVATE}/team/app): ecr-credential-provider "
        "(matched '*.dkr.ecr.*.amazonaws.com')" in out
    )
    assert "image public.ecr.aws/nginx/nginx: ecr-credential-provider (matched 'public.ecr.aws')" in out
    assert "image nginx:latest (sent to plugins as docker.io/library/nginx): no provider" in out
    assert f"image {PRIVATE}:443/app: no provider" in out
    assert "warning: image 'nginx:latest': no matchImages pattern covers it" in result.stderr
    assert f"warning: image '{PRIVATE}:443/app': no matchImages pattern covers it" in result.stderr


def test_image_report_several_providers(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1",
        "kind": "CredentialProviderConfig",
        "providers": [
            {
                "name": "first",
                "matchImages": ["*.dkr.ecr.*.amazonaws.com"],
                "defaultCacheDuration": "1h",
                "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
            },
            {
                "name": "second",
                "matchImages": [f"{PRIVATE}/team"],
                "defaultCacheDuration": "1h",
                "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
            },
        ],
    }
    (tmp_path / "c.json").write_text(json.dumps(doc))
    result = run(str(tmp_path / "c.json"), "--image", f"{PRIVATE}/team/app")
    assert result.returncode == 0
    assert (
        f"image {PRIVATE}/team/app: first (matched '*.dkr.ecr.*.amazonaws.com'), second (matched "
        f"'{PRIVATE}/team')" in result.stdout
    )
    assert "runs every matching provider, in config order" in result.stdout


def test_bin_dir(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.json")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    missing = run(str(path), "--bin-dir", str(bin_dir))
    assert missing.returncode == 1
    assert "error: providers[0].name: plugin binary" in missing.stderr and "does not exist" in missing.stderr

    binary = bin_dir / "ecr-credential-provider"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o644)
    not_exec = run(str(path), "--bin-dir", str(bin_dir))
    assert not_exec.returncode == 1 and "is not executable" in not_exec.stderr

    binary.chmod(0o755)
    ok = run(str(path), "--bin-dir", str(bin_dir))
    assert ok.returncode == 0, ok.stderr
    assert "OK: the kubelet would accept this config and plugin binaries" in ok.stdout

    no_dir = run(str(path), "--bin-dir", str(tmp_path / "nope"))
    assert no_dir.returncode == 1 and "plugin binary directory does not exist" in no_dir.stderr


@pytest.mark.parametrize("args", [("",), (str(EXAMPLES / "eks-default.json"), "--bin-dir", "")])
def test_an_empty_path_is_a_usage_error_not_the_working_directory(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2 and "must not be empty" in result.stderr
    assert "config directory" not in result.stdout


def test_main_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ecr_kubelet.validate_config import main

    assert main([str(write_config(tmp_path / "c.json"))]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("nginx:1.25", "docker.io/library/nginx"),
        ("library/nginx@sha256:" + "a" * 64, "docker.io/library/nginx"),
        ("bitnami/redis:7", "docker.io/bitnami/redis"),
        ("docker.io/nginx", "docker.io/library/nginx"),
        ("index.docker.io/bitnami/redis", "docker.io/bitnami/redis"),
        ("localhost/app:1", "localhost/app"),
        ("localhost:5000/app:1", "localhost:5000/app"),
        (f"{PRIVATE}/team/app:1.2@sha256:" + "b" * 64, f"{PRIVATE}/team/app"),
        (f"{PRIVATE}:443/app", f"{PRIVATE}:443/app"),
    ],
)
def test_normalize_image(given: str, sent: str) -> None:
    assert normalize_image(given) == sent


def test_an_image_parse_image_refuses_is_a_warning(tmp_path: Path) -> None:
    result = run(str(write_config(tmp_path / "c.json")), "--image", "https://public.ecr.aws/nginx")
    assert result.returncode == 0
    assert "warning: image 'https://public.ecr.aws/nginx': image must not contain a URL scheme" in result.stderr


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "fifo in a directory", "too large"])
def test_only_regular_files_of_a_bounded_size_are_read(tmp_path: Path, kind: str) -> None:
    # The kubelet would hang on a FIFO and read /dev/zero until memory runs out: refused, never read.
    if kind == "/dev/zero":
        path = Path("/dev/zero")
    elif kind == "too large":
        path = tmp_path / "config.json"
        path.write_bytes(b" " * (4 * 1024 * 1024 + 1))
    else:
        directory = tmp_path / "config.d" if kind == "fifo in a directory" else tmp_path
        directory.mkdir(exist_ok=True)
        path = directory / "10-config.json"
        os.mkfifo(path)  # nobody ever writes it
        if kind == "fifo in a directory":
            write_config(directory / "20-ok.json")
            path = directory
    result = run(str(path))
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "refused, not read" in errors[0] and "INVALID" in result.stdout


@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_a_report_that_cannot_be_written_is_one_error_line(tmp_path: Path, stdout: str) -> None:
    config = str(write_config(tmp_path / "c.json"))
    cmd = [str(CONSOLE_SCRIPT), "validate-config", config]
    if stdout == "full":
        with open("/dev/full", "wb") as full:
            result = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    else:
        result = subprocess.run(["sh", "-c", 'exec 1>&-; exec "$@"', "sh", *cmd], stderr=subprocess.PIPE,
                                text=True, timeout=60, check=False)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("ecr-credential-provider validate-config: error: cannot write")


@pytest.mark.parametrize("args", [(), ("--bogus", "x.json"), ("a.json", "b.json")])
def test_a_usage_error_is_one_line_exit_2(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("ecr-credential-provider validate-config: error: usage: ")
