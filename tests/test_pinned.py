"""The binary's tricks on private internals are allowed only in the frozen binary, for the recorded versions."""

from __future__ import annotations

import sys
import types

import botocore
import pytest
import urllib3

from ecr_kubelet import pinned


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
