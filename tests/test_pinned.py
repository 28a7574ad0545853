"""The binary's tricks on private internals are allowed only in the frozen binary, for the recorded versions."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import botocore
import pytest
import urllib3

from bundle import Bundle
from ecr_kubelet import pinned

ROOT = Path(__file__).resolve().parent.parent


def _built_with(monkeypatch: pytest.MonkeyPatch, recorded: object, frozen: bool = True) -> None:
    build_info = types.ModuleType("ecr_kubelet._build_info")
    build_info.PINNED = recorded  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, build_info.__name__, build_info)
    if frozen:
        monkeypatch.setattr(sys, "frozen", True, raising=False)
    else:
        monkeypatch.delattr(sys, "frozen", raising=False)


def test_the_build_records_this_interpreter_and_the_packages_the_tricks_rely_on() -> None:
    assert pinned.versions() == {"python": sys.version, "botocore": botocore.__version__,
                                 "urllib3": urllib3.__version__}  # type: ignore[attr-defined]


def test_in_the_binary_built_with_these_versions_every_check_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    _built_with(monkeypatch, pinned.versions())
    assert pinned.recorded() == pinned.versions()
    assert pinned.python() and pinned.package(botocore) and pinned.package(urllib3)


@pytest.mark.parametrize("changed", ["python", "botocore", "urllib3"])
def test_a_version_other_than_the_recorded_one_fails_its_check_only(monkeypatch: pytest.MonkeyPatch,
                                                                    changed: str) -> None:
    _built_with(monkeypatch, {**pinned.versions(), changed: "3.99.0"})
    assert pinned.python() == (changed != "python")
    assert pinned.package(botocore) == (changed != "botocore")
    assert pinned.package(urllib3) == (changed != "urllib3")


@pytest.mark.parametrize("recorded", [None, ["python"], {"python": 3}, {}])
def test_a_missing_or_damaged_record_allows_nothing(monkeypatch: pytest.MonkeyPatch, recorded: object) -> None:
    _built_with(monkeypatch, recorded)
    assert not pinned.python() and not pinned.package(botocore)


def test_outside_the_binary_a_record_allows_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pip install, or a checkout after a local build (which writes _build_info.py into src/)."""
    _built_with(monkeypatch, pinned.versions(), frozen=False)
    assert pinned.recorded() == {}
    assert not pinned.python() and not pinned.package(botocore) and not pinned.package(urllib3)


def test_the_binary_records_the_versions_it_bundles(bundle: Bundle, tmp_path: Path) -> None:
    """The release binary's _build_info.PINNED (read from its bytecode archive) names the interpreter
    it bundles and the botocore and urllib3 pinned for the release."""
    readers = pytest.importorskip("PyInstaller.archive.readers")
    bundle.write_tree(tmp_path)
    program = tmp_path / "ecr-credential-provider"
    if not (tmp_path / "_internal").is_dir():
        pytest.skip("a PyInstaller one-file build (--onefile), not the unpack-once launcher")
    archive = readers.CArchiveReader(str(program)).open_embedded_archive("PYZ.pyz")
    build_info: dict[str, object] = {}
    exec(archive.extract("ecr_kubelet._build_info"), build_info)  # the binary's own module
    recorded = build_info["PINNED"]
    assert isinstance(recorded, dict) and set(recorded) == {"python", *pinned.PACKAGES}
    release_pins = dict(re.findall(r"(?m)^([A-Za-z0-9_.-]+)==(\S+)",
                                   (ROOT / "packaging" / "requirements-release.txt").read_text()))
    assert {name: recorded[name] for name in pinned.PACKAGES} == {name: release_pins[name] for name in pinned.PACKAGES}
    major_minor = ".".join(str(recorded["python"]).split(".")[:2])
    assert (tmp_path / "_internal" / f"libpython{major_minor}.so.1.0").is_file()
    assert {"ecr_kubelet.pinned", "ecr_kubelet.compiled_re", "ecr_kubelet.stand_ins"} <= set(archive.toc)
