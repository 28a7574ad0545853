"""The CredentialProviderConfig cases of tests/data/kubelet-configs.json, shared with the Go tests.

The same file is fed to our validator (tests/test_kubelet_config.py), to `validate-config` through the
console script and the binary (tests/test_validate_config.py), and to the kubelet's own registration
code (tests/kubelet/configs_test.go), so that the verdicts cannot drift apart. Its "about" entry says
what each field means.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CASES_FILE = Path(__file__).resolve().parent / "data" / "kubelet-configs.json"
CONFIG_V1 = "kubelet.config.k8s.io/v1"

CASES: list[dict[str, Any]] = json.loads(CASES_FILE.read_text())["cases"]
IDS = [case["id"] for case in CASES]


def case(case_id: str) -> dict[str, Any]:
    return next(c for c in CASES if c["id"] == case_id)


def _content(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def single_file(c: dict[str, Any]) -> tuple[str, str] | None:
    """(file name, content) of a one-file case; None for a directory case or a missing path."""
    if "providers" in c:
        doc = {"apiVersion": CONFIG_V1, "kind": "CredentialProviderConfig", "providers": c["providers"]}
        return c.get("file", "config.json"), json.dumps(doc)
    if "config" in c:
        return c.get("file", "config.json"), json.dumps(c["config"])
    if "text" in c:
        return c.get("file", "config.json"), c.get("prefix", "") + c["text"] * c.get("repeat", 1)
    return None


def write_case(c: dict[str, Any], where: Path) -> Path:
    """Write the case below `where` (an empty directory) and return the path to give the kubelet."""
    one = single_file(c)
    if one is not None:
        path = where / one[0]
        path.write_text(one[1])
        return path
    if c.get("missing"):
        return where / "absent.json"
    directory = where / "config.d"
    directory.mkdir()
    for name in c.get("subdirs", []):
        (directory / name).mkdir()
    for name, value in c["files"].items():
        (directory / name).write_text(_content(value))
    return directory


def gate(c: dict[str, Any]) -> bool:
    """KubeletServiceAccountTokenForCredentialProviders (on unless the case turns it off)."""
    return bool(c.get("sa_token_gate", True))
