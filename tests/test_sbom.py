"""The SBOM of each release binary (packaging/sbom.py, written by scripts/release): a valid
CycloneDX 1.6 document naming the interpreter, OpenSSL, zlib, glibc, the launcher and every Python
distribution with version and licence, and accounting for every file the binary unpacks."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from bundle import Bundle
from helpers import RELEASE_DIR, require_built

ROOT = Path(__file__).resolve().parent.parent
RELEASE = RELEASE_DIR
ARCHES = ("amd64", "arm64")
RUNTIME_PYTHON = {"botocore", "jmespath", "python-dateutil", "six", "urllib3", "pydantic", "pydantic-core",
                  "annotated-types", "typing-extensions", "typing-inspection", "pyyaml", "certifi"}
NATIVE = {"libpython3.11": "interpreter", "libssl3": "OpenSSL", "zlib1g": "zlib", "libc6": "glibc",
          "ecr-kubelet-launcher": "launcher", "pyinstaller": "bootloader", "libmd-dev": "launcher's SHA-256"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sbom(arch: str) -> tuple[dict[str, Any], str]:
    path = RELEASE / f"ecr-credential-provider-linux-{arch}.cdx.json"
    text = require_built(path, "scripts/release writes it").read_text()
    return json.loads(text), text


def pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "packaging/requirements-release.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            pins[norm(m.group(1))] = m.group(2)
    return pins


@pytest.mark.parametrize("arch", ARCHES)
def test_sbom_is_valid_cyclonedx(arch: str) -> None:
    doc, text = sbom(arch)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None


@pytest.mark.parametrize("arch", ARCHES)
def test_sbom_names_the_runtime_with_versions_and_licences(arch: str) -> None:
    doc, _ = sbom(arch)
    comps = {norm(c["name"]): c for c in doc["components"]}
    for name, what in NATIVE.items():
        assert norm(name) in comps, f"the SBOM lacks the {what} ({name})"
    missing = RUNTIME_PYTHON - set(comps)
    assert not missing, f"Python distributions missing: {sorted(missing)}"
    pins = pinned()
    for name in RUNTIME_PYTHON | {"pyinstaller"}:
        assert comps[name]["version"] == pins[name], f"{name}: SBOM {comps[name]['version']}, lock {pins[name]}"
    for comp in doc["components"]:
        assert comp.get("version"), comp["name"]
        [lic] = comp["licenses"]
        assert lic["expression"] and lic["expression"] != "UNKNOWN", comp["name"]
    assert comps["libssl3"]["version"].startswith("3.")
    assert comps[norm("libpython3.11")]["version"].startswith("3.11.")
    assert comps["libc6"]["licenses"][0]["expression"] == "LGPL-2.1-or-later"
    assert comps["pyinstaller"]["licenses"][0]["expression"] == "GPL-2.0-or-later WITH Bootloader-exception"
    purls = [c["purl"] for c in doc["components"]]
    assert all(p.startswith(("pkg:deb/debian/", "pkg:pypi/", "pkg:generic/")) for p in purls)
    assert any(f"arch={arch}" in p for p in purls if p.startswith("pkg:deb/"))


@pytest.mark.parametrize("arch", ARCHES)
def test_sbom_accounts_for_every_bundled_file_once(arch: str) -> None:
    doc, _ = sbom(arch)
    binary = RELEASE / f"ecr-credential-provider-linux-{arch}"
    listed = Counter(p["value"] for c in doc["components"] for p in c.get("properties", [])
                     if p["name"] == "ecr-kubelet:file" and not p["value"].startswith("("))
    bundle = Bundle(binary)
    files = {e.path for e in bundle.entries}
    assert files - set(listed) == set(), "bundled files the SBOM does not name"
    assert set(listed) - files == set(), "files the SBOM names that the binary does not carry"
    assert [f for f, n in listed.items() if n > 1] == []
    [digest] = doc["metadata"]["component"]["hashes"]
    assert digest == {"alg": "SHA-256", "content": hashlib.sha256(binary.read_bytes()).hexdigest()}
