"""CredentialProviderConfig decoding and the kubelet's validation rules.

Whole configurations and their verdicts are in tests/data/kubelet-configs.json, which the Go tests feed
to the kubelet's own registration code too (tests/kubelet/configs_test.go): every case here is judged
by both. The tests below the shared cases look at what a verdict alone does not show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config_cases import CASES, IDS, case, gate, single_file, write_case
from ecr_kubelet.kubelet_config import ConfigIssue, LoadedConfig, decode_config, load_config, qualified_name_errors


def shown_where(issue: ConfigIssue) -> str:
    """What stands before the message when the issue is printed: file and field path."""
    text = str(issue)
    return text[: len(text) - len(issue.message)].removesuffix(": ")


def load_case(c: dict[str, Any], tmp_path: Path) -> LoadedConfig:
    return load_config(write_case(c, tmp_path), service_account_tokens_enabled=gate(c))


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_shared_case(c: dict[str, Any], tmp_path: Path) -> None:
    result = load_case(c, tmp_path)
    reported = [(shown_where(i), i.message) for i in result.errors]
    assert [where for where, _ in reported] == [where for where, _ in c["errors"]], reported
    for (where, message), (_, fragment) in zip(reported, c["errors"], strict=True):
        assert fragment in message, (where, message)
    warnings = [w.message for w in result.warnings]
    assert len(warnings) == len(c.get("warnings", [])), warnings
    for fragment, message in zip(c.get("warnings", []), warnings, strict=True):
        assert fragment in message


def test_every_valid_version_pair_is_a_shared_case() -> None:
    from ecr_kubelet.kubelet_config import CONFIG_API_VERSIONS
    from ecr_kubelet.wire import API_VERSIONS

    pairs = {(c["config"]["apiVersion"], c["config"]["providers"][0]["apiVersion"])
             for c in CASES if c["id"].startswith("valid-config-") and not c["errors"]}
    assert pairs == {(config, provider) for config in CONFIG_API_VERSIONS for provider in API_VERSIONS}


def test_yaml_with_everything_decodes_every_field(tmp_path: Path) -> None:
    result = load_case(case("valid-yaml-with-everything"), tmp_path)
    p = result.providers[0].provider
    assert p.token_attributes is not None and p.token_attributes.require_service_account is True
    assert p.token_attributes.optional_service_account_annotation_keys == ["example.com/Other_Key"]
    assert p.env is not None and p.env[0].value == "regional"
    assert p.default_cache_seconds == 0


def test_directory_mode_reads_config_files_in_order(tmp_path: Path) -> None:
    result = load_case(case("valid-directory"), tmp_path)
    assert result.directory
    assert [Path(f).name for f in result.files] == ["10-a.json", "20-b.yaml", "30-c.yml"]
    assert [lp.provider.name for lp in result.providers] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("eks.amazonaws.com/ecr-role-arn", True),
        ("Example.COM/Some_Key.1", True),  # case does not matter
        ("simple", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("-leading", False),
        ("trailing-", False),
        ("bad_prefix_/x", False),
        ("", False),
    ],
)
def test_qualified_names(key: str, ok: bool) -> None:
    assert (not qualified_name_errors(key)) is ok


def test_decode_config_direct() -> None:
    one = single_file(case("duplicate-names"))
    assert one is not None
    doc = decode_config(one[1], "f.json")
    assert doc.declared == 2 and len(doc.providers) == 2 and not doc.issues


def test_issue_formatting() -> None:
    assert str(ConfigIssue("providers[0].name", "bad")) == "providers[0].name: bad"
    assert str(ConfigIssue("providers[0].name", "bad", "a.json")) == "a.json: providers[0].name: bad"
    assert str(ConfigIssue("", "bad", "a.json")) == "a.json: bad"

