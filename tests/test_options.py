"""Options: flags and environment read once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ecr_kubelet.errors import BadInputError
from ecr_kubelet.options import Options, configured_endpoints, default_cache_dir


def test_default_cache_dir_as_root_or_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_cache_dir({}) == "/var/cache/ecr-credential-provider"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_cache_dir({"HOME": str(tmp_path)}) == str(tmp_path / ".cache" / "ecr-credential-provider")
    xdg = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert default_cache_dir(xdg) == str(tmp_path / "xdg" / "ecr-credential-provider")
    # a relative XDG_CACHE_HOME is invalid (XDG spec) and ignored; a relative HOME is refused
    assert default_cache_dir({**xdg, "XDG_CACHE_HOME": "rel"}) == str(tmp_path / ".cache" / "ecr-credential-provider")
    with pytest.raises(BadInputError, match="HOME must be an absolute path"):
        default_cache_dir({"HOME": "relative"})


def test_configured_endpoints_per_service_then_global_unless_ignored() -> None:
    env = {"AWS_ENDPOINT_URL_ECR": "http://127.0.0.1:1", "AWS_ENDPOINT_URL": "http://127.0.0.1:2"}
    assert configured_endpoints(env) == {"ecr": "http://127.0.0.1:1", "ecr-public": "http://127.0.0.1:2",
                                         "sts": "http://127.0.0.1:2", "eks-auth": "http://127.0.0.1:2"}
    assert configured_endpoints({**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}) == {}
    assert configured_endpoints({}) == {}


def test_options_are_immutable_and_replaceable() -> None:
    options = Options(cache_dir=Path("/var/cache/x"), environ={})
    assert options.cache_dir == "/var/cache/x"
    with pytest.raises(AttributeError):
        options.timeout = 1.0
    assert options.replace(timeout=1.0).timeout == 1.0 and options.timeout == 57.0
