"""CredentialProviderConfig decoding and the kubelet's validation rules, one test per rule."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ecr_kubelet.kubelet_config import (
    ConfigIssue,
    LoadedConfig,
    decode_config,
    load_config,
    qualified_name_errors,
)

V1 = "credentialprovider.kubelet.k8s.io/v1"


def provider(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "ecr-credential-provider",
        "matchImages": ["*.dkr.ecr.*.amazonaws.com", "public.ecr.aws"],
        "defaultCacheDuration": "12h",
        "apiVersion": V1,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP: Any = object()


def config(*providers: dict[str, Any], api_version: str = "kubelet.config.k8s.io/v1") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": "CredentialProviderConfig", "providers": list(providers)}


def token_attributes(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "serviceAccountTokenAudience": "sts.amazonaws.com",
        "cacheType": "ServiceAccount",
        "requireServiceAccount": False,
        "optionalServiceAccountAnnotationKeys": ["eks.amazonaws.com/ecr-role-arn"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


def load(tmp_path: Path, doc: dict[str, Any] | str, name: str = "config.json", **kw: Any) -> LoadedConfig:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return load_config(path, **kw)


def errors(result: LoadedConfig) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in result.errors]


def assert_error(result: LoadedConfig, path: str, fragment: str) -> None:
    found = [msg for p, msg in errors(result) if p == path]
    assert any(fragment in msg for msg in found), f"no {fragment!r} at {path}; got {errors(result)}"


# ------------------------------------------------------------------------------------- valid configs


@pytest.mark.parametrize(
    "api_version", ["kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1", "kubelet.config.k8s.io/v1alpha1"]
)
@pytest.mark.parametrize(
    "provider_version",
    [
        "credentialprovider.kubelet.k8s.io/v1",
        "credentialprovider.kubelet.k8s.io/v1beta1",
        "credentialprovider.kubelet.k8s.io/v1alpha1",
    ],
)
def test_valid_versions(tmp_path: Path, api_version: str, provider_version: str) -> None:
    result = load(tmp_path, config(provider(apiVersion=provider_version), api_version=api_version))
    assert result.ok, errors(result)
    assert not result.warnings
    assert [lp.provider.name for lp in result.providers] == ["ecr-credential-provider"]


def test_valid_yaml_with_everything(tmp_path: Path) -> None:
    text = """
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: ecr-credential-provider
    matchImages: ["*.dkr.ecr.*.amazonaws.com"]
    defaultCacheDuration: 0s
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: ["-v", "--sa-role-annotation", "eks.amazonaws.com/ecr-role-arn"]
    env:
      - name: AWS_STS_REGIONAL_ENDPOINTS
        value: regional
    tokenAttributes:
      serviceAccountTokenAudience: sts.amazonaws.com
      cacheType: Token
      requireServiceAccount: true
      requiredServiceAccountAnnotationKeys: [eks.amazonaws.com/ecr-role-arn]
      optionalServiceAccountAnnotationKeys: [example.com/Other_Key]
"""
    result = load(tmp_path, text, "config.yaml")
    assert result.ok, errors(result)
    p = result.providers[0].provider
    assert p.token_attributes is not None and p.token_attributes.require_service_account is True
    assert p.env is not None and p.env[0].value == "regional"
    assert p.default_cache_seconds == 0


def test_null_optional_fields_are_zero_values(tmp_path: Path) -> None:
    result = load(tmp_path, config(provider(args=None, env=None, tokenAttributes=None)))
    assert result.ok, errors(result)


# ------------------------------------------------------------------------------------ document level


@pytest.mark.parametrize(
    ("doc", "path", "fragment"),
    [
        ({"kind": "CredentialProviderConfig", "providers": [provider()]}, "apiVersion", "required"),
        (config(provider(), api_version="kubelet.config.k8s.io/v2"), "apiVersion", "unknown version"),
        (config(provider(), api_version="example.com/v1"), "apiVersion", "unexpected group"),
        ({**config(provider()), "kind": "KubeletConfiguration"}, "kind", "wrong kind"),
        ({"apiVersion": "kubelet.config.k8s.io/v1", "providers": [provider()]}, "kind", "required"),
        ({**config(provider()), "extra": 1}, "extra", "unknown field"),
        ({**config(), "providers": []}, "providers", "at least one provider"),
        (
            {"apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig"},
            "providers",
            "at least one provider",
        ),
        ({**config(), "providers": {"a": 1}}, "providers", "must be a list"),
        (config("not-an-object"), "providers[0]", "must be an object"),  # type: ignore[arg-type]
    ],
)
def test_document_errors(tmp_path: Path, doc: dict[str, Any], path: str, fragment: str) -> None:
    assert_error(load(tmp_path, doc), path, fragment)


def test_not_an_object(tmp_path: Path) -> None:
    result = load(tmp_path, "- a\n- b\n", "c.yaml")
    assert not result.ok
    assert "expected a CredentialProviderConfig object" in str(result.errors[0])


def test_duplicate_json_key(tmp_path: Path) -> None:
    text = '{"apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig", "kind": "x"}'
    result = load(tmp_path, text)
    assert any("duplicate field 'kind'" in i.message for i in result.errors)


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    text = """apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: a
    name: b
    matchImages: ["x"]
"""
    result = load(tmp_path, text, "c.yaml")
    assert any("duplicate field 'name'" in i.message and "line 5" in i.message for i in result.errors)


def test_bad_yaml_and_json(tmp_path: Path) -> None:
    assert not load(tmp_path, "{not json", "a.json").ok
    assert "invalid YAML" in str(load(tmp_path, "a: [b", "b.yaml").errors[0])


def test_multiple_yaml_documents_warn(tmp_path: Path) -> None:
    text = "---\n" + json.dumps(config(provider())) + "\n---\nkind: Other\n"
    result = load(tmp_path, text, "c.yaml")
    assert result.ok
    assert any("2 YAML documents" in w.message for w in result.warnings)


# ------------------------------------------------------------------------------------ provider rules


@pytest.mark.parametrize(
    ("prov", "path", "fragment"),
    [
        (provider(name=_DROP), "providers[0].name", "required"),
        (provider(name="a/b"), "providers[0].name", "cannot contain '/'"),
        (provider(name="a b"), "providers[0].name", "cannot contain spaces"),
        (provider(name="."), "providers[0].name", "cannot be '.'"),
        (provider(name=".."), "providers[0].name", "cannot be '..'"),
        (provider(apiVersion=_DROP), "providers[0].apiVersion", "required"),
        (provider(apiVersion="credentialprovider.kubelet.k8s.io/v2"), "providers[0].apiVersion", "unsupported"),
        (provider(matchImages=_DROP), "providers[0].matchImages", "at least one pattern"),
        (provider(matchImages=[]), "providers[0].matchImages", "at least one pattern"),
        (provider(matchImages=["ok.example", "a b"]), "providers[0].matchImages[1]", "in host name"),
        (provider(matchImages=["x:port"]), "providers[0].matchImages[0]", 'invalid port ":port"'),
        (provider(matchImages=["x/%g0"]), "providers[0].matchImages[0]", "invalid URL escape"),
        (provider(defaultCacheDuration=_DROP), "providers[0].defaultCacheDuration", "required"),
        (provider(defaultCacheDuration=None), "providers[0].defaultCacheDuration", "required"),
        (provider(defaultCacheDuration="-1s"), "providers[0].defaultCacheDuration", "greater than or equal to 0"),
        (provider(defaultCacheDuration="1d"), "providers[0].defaultCacheDuration", "not a Go duration"),
        (provider(defaultCacheDuration="12"), "providers[0].defaultCacheDuration", "not a Go duration"),
        (provider(defaultCacheDuration=""), "providers[0].defaultCacheDuration", "not a Go duration"),
        (provider(defaultCacheDuration=3600), "providers[0].defaultCacheDuration", "must be a string"),
        (provider(name=5), "providers[0].name", "must be a string, got number 5"),
        (provider(matchImages="*.example.com"), "providers[0].matchImages", "must be a list"),
        (provider(Name="x"), "providers[0].Name", "unknown field"),
        (
            provider(env=[{"name": "A", "value": "b", "valueFrom": {}}]),
            "providers[0].env[0].valueFrom",
            "unknown field",
        ),
    ],
)
def test_provider_errors(tmp_path: Path, prov: dict[str, Any], path: str, fragment: str) -> None:
    assert_error(load(tmp_path, config(prov)), path, fragment)


def test_errors_are_collected_not_first_only(tmp_path: Path) -> None:
    bad = provider(name="a b", matchImages=["ok", "x y", "h:p"], defaultCacheDuration="-5m", Args=[])
    result = load(tmp_path, config(bad, provider(name="a b", apiVersion="")))
    paths = [p for p, _ in errors(result)]
    assert "providers[0].Args" in paths  # decoding error ...
    assert "providers[0].matchImages[1]" in paths  # ... and the rest of the same provider
    assert "providers[0].matchImages[2]" in paths
    assert "providers[0].defaultCacheDuration" in paths
    assert "providers[1].apiVersion" in paths
    assert any(p == "providers[1].name" and "duplicate provider name" in m for p, m in errors(result))


def test_duplicate_names(tmp_path: Path) -> None:
    result = load(tmp_path, config(provider(), provider(matchImages=["other.example"])))
    assert_error(result, "providers[1].name", "duplicate provider name 'ecr-credential-provider'")


# --------------------------------------------------------------------------------- tokenAttributes


@pytest.mark.parametrize(
    ("attrs", "path", "fragment"),
    [
        (
            token_attributes(serviceAccountTokenAudience=_DROP),
            "providers[0].tokenAttributes.serviceAccountTokenAudience",
            "required",
        ),
        (
            token_attributes(serviceAccountTokenAudience=""),
            "providers[0].tokenAttributes.serviceAccountTokenAudience",
            "required",
        ),
        (
            token_attributes(requireServiceAccount=_DROP),
            "providers[0].tokenAttributes.requireServiceAccount",
            "required",
        ),
        (
            token_attributes(requireServiceAccount="true"),
            "providers[0].tokenAttributes.requireServiceAccount",
            "must be true or false",
        ),
        (token_attributes(cacheType=_DROP), "providers[0].tokenAttributes.cacheType", "required"),
        (token_attributes(cacheType="token"), "providers[0].tokenAttributes.cacheType", "unsupported value 'token'"),
        (
            token_attributes(
                requiredServiceAccountAnnotationKeys=["eks.amazonaws.com/ecr-role-arn"],
                optionalServiceAccountAnnotationKeys=_DROP,
            ),
            "providers[0].tokenAttributes.requiredServiceAccountAnnotationKeys",
            "requireServiceAccount cannot be false",
        ),
        (
            token_attributes(optionalServiceAccountAnnotationKeys=["bad key"]),
            "providers[0].tokenAttributes.optionalServiceAccountAnnotationKeys[0]",
            "name part must consist of",
        ),
        (
            token_attributes(optionalServiceAccountAnnotationKeys=["a/b/c"]),
            "providers[0].tokenAttributes.optionalServiceAccountAnnotationKeys[0]",
            "one '/'",
        ),
        (
            token_attributes(optionalServiceAccountAnnotationKeys=["/name"]),
            "providers[0].tokenAttributes.optionalServiceAccountAnnotationKeys[0]",
            "prefix part must be non-empty",
        ),
        (
            token_attributes(optionalServiceAccountAnnotationKeys=["a.example/x", "a.example/x"]),
            "providers[0].tokenAttributes.optionalServiceAccountAnnotationKeys[1]",
            "duplicate key",
        ),
        (
            token_attributes(
                requireServiceAccount=True,
                requiredServiceAccountAnnotationKeys=["a.example/x"],
                optionalServiceAccountAnnotationKeys=["a.example/x"],
            ),
            "providers[0].tokenAttributes",
            "both required and optional: a.example/x",
        ),
        (token_attributes(extra=True), "providers[0].tokenAttributes.extra", "unknown field"),
    ],
)
def test_token_attribute_errors(tmp_path: Path, attrs: dict[str, Any], path: str, fragment: str) -> None:
    assert_error(load(tmp_path, config(provider(tokenAttributes=attrs))), path, fragment)


def test_token_attributes_need_v1_provider_api(tmp_path: Path) -> None:
    prov = provider(apiVersion="credentialprovider.kubelet.k8s.io/v1beta1", tokenAttributes=token_attributes())
    assert_error(load(tmp_path, config(prov)), "providers[0].tokenAttributes", "only supported with apiVersion")


@pytest.mark.parametrize("api_version", ["kubelet.config.k8s.io/v1beta1", "kubelet.config.k8s.io/v1alpha1"])
def test_token_attributes_unknown_in_old_config_groups(tmp_path: Path, api_version: str) -> None:
    result = load(tmp_path, config(provider(tokenAttributes=token_attributes()), api_version=api_version))
    assert_error(result, "providers[0].tokenAttributes", "exists only in kubelet.config.k8s.io/v1")


def test_token_attributes_feature_gate(tmp_path: Path) -> None:
    doc = config(provider(tokenAttributes=token_attributes()))
    assert load(tmp_path, doc).ok
    assert_error(
        load(tmp_path, doc, service_account_tokens_enabled=False),
        "providers[0].tokenAttributes",
        "feature gate is disabled",
    )


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


# -------------------------------------------------------------------------------------------- warnings


@pytest.mark.parametrize(
    ("prov", "fragment"),
    [
        (provider(matchImages=["https://123.dkr.ecr.us-east-1.amazonaws.com"]), "has a scheme"),
        (provider(matchImages=["registry.example/app:1.0"]), "without tag or digest"),
        (
            provider(args=["--mirror", "mirror.example:5000=123456789012.dkr.ecr.us-east-1.amazonaws.com"]),
            "mirror host 'mirror.example:5000' is not covered",
        ),
        (
            provider(args=["--mirror=mirror.example=123456789012.dkr.ecr.us-east-1.amazonaws.com"]),
            "mirror host 'mirror.example' is not covered",
        ),
        (provider(env=[{"name": "", "value": "x"}]), "empty environment variable name"),
    ],
)
def test_warnings(tmp_path: Path, prov: dict[str, Any], fragment: str) -> None:
    result = load(tmp_path, config(prov))
    assert result.ok, errors(result)
    assert any(fragment in w.message for w in result.warnings), result.warnings


def test_mirror_covered_no_warning(tmp_path: Path) -> None:
    prov = provider(
        matchImages=["*.dkr.ecr.*.amazonaws.com", "mirror.example:5000"],
        args=["--mirror", "mirror.example:5000=123456789012.dkr.ecr.us-east-1.amazonaws.com"],
    )
    result = load(tmp_path, config(prov))
    assert result.ok and not result.warnings


# ----------------------------------------------------------------------------------- directory mode


def test_directory_mode(tmp_path: Path) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    (d / "20-b.yaml").write_text(json.dumps(config(provider(name="b"))))
    (d / "10-a.json").write_text(json.dumps(config(provider(name="a"))))
    (d / "30-c.yml").write_text(json.dumps(config(provider(name="c"))))
    (d / "README.md").write_text("ignored")
    (d / "40-d.yaml.bak").write_text("ignored")
    (d / "50-dir.json").mkdir()  # directories are skipped even with a matching name
    result = load_config(d)
    assert result.ok, errors(result)
    assert result.directory
    assert [Path(f).name for f in result.files] == ["10-a.json", "20-b.yaml", "30-c.yml"]
    assert [lp.provider.name for lp in result.providers] == ["a", "b", "c"]


def test_directory_duplicates_across_files(tmp_path: Path) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    (d / "a.json").write_text(json.dumps(config(provider())))
    (d / "b.json").write_text(json.dumps(config(provider(matchImages=["*"]), provider(name="x", apiVersion=""))))
    result = load_config(d)
    issues = {(i.file, i.path): i.message for i in result.errors}
    assert (
        "duplicate provider name 'ecr-credential-provider' (first at a.json: providers[0])"
        in issues[("b.json", "providers[0].name")]
    )
    assert ("b.json", "providers[1].apiVersion") in issues
    assert str(result.errors[0]).startswith("b.json: providers[0].name: ")


def test_directory_file_errors_name_the_file(tmp_path: Path) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    (d / "a.json").write_text(json.dumps(config(provider())))
    (d / "b.yaml").write_text("apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nbogus: 1\n")
    result = load_config(d)
    assert [(i.file, i.path) for i in result.errors] == [("b.yaml", "bogus")]


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    result = load_config(tmp_path)
    assert not result.ok
    assert "no configuration files" in result.errors[0].message


def test_empty_files_in_directory_need_one_provider_overall(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({**config(), "providers": []}))
    (tmp_path / "b.json").write_text(json.dumps(config(provider())))
    assert load_config(tmp_path).ok


def test_missing_path(tmp_path: Path) -> None:
    result = load_config(tmp_path / "nope.json")
    assert not result.ok and "unable to access" in result.errors[0].message


def test_decode_config_direct() -> None:
    doc = decode_config(json.dumps(config(provider(), provider(name="x"))), "f.json")
    assert doc.declared == 2 and len(doc.providers) == 2 and not doc.issues


def test_issue_formatting() -> None:
    assert str(ConfigIssue("providers[0].name", "bad")) == "providers[0].name: bad"
    assert str(ConfigIssue("providers[0].name", "bad", "a.json")) == "a.json: providers[0].name: bad"
    assert str(ConfigIssue("", "bad", "a.json")) == "a.json: bad"


def test_inputs_not_mutated(tmp_path: Path) -> None:
    doc = config(provider(tokenAttributes=token_attributes()), api_version="kubelet.config.k8s.io/v1beta1")
    before = copy.deepcopy(doc)
    load(tmp_path, doc)
    assert doc == before
