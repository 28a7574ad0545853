"""Every shipped example configuration is valid for the kubelet and matches what it says it matches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ecr_kubelet.image_match import urls_match
from ecr_kubelet.kubelet_config import load_config
from ecr_kubelet.registry import classify_host

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "credentialproviders"
CONFIGS = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".json", ".yaml", ".yml"))
MANIFESTS = sorted((EXAMPLES / "rbac").glob("*.yaml"))
HOST_FAMILIES = REPO / "tests" / "data" / "ecr-host-families.json"  # also read by the Go tests
KUBERNETES_VERSION = "1.34.0"

COMMERCIAL = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app"
DUALSTACK = "123456789012.dkr-ecr.us-east-1.on.aws/app"
CHINA = "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/app"
GOV_FIPS = "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/app"
COMMERCIAL_FIPS = "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com/app"
C2S = "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov/app"
EUSC = "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu/app"
PUBLIC = "public.ecr.aws/nginx/nginx"
DOCKER = "docker.io/library/nginx"
LOOKALIKE = "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example/app"

EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    # file: (images it must cover, images it must not cover)
    "eks-default.json": ([COMMERCIAL, DUALSTACK, CHINA, GOV_FIPS, C2S, EUSC, PUBLIC], [DOCKER, LOOKALIKE]),
    "eks-default.yaml": ([COMMERCIAL, DUALSTACK, CHINA, GOV_FIPS, C2S, EUSC, PUBLIC], [DOCKER, LOOKALIKE]),
    "commercial.yaml": ([COMMERCIAL, DUALSTACK, PUBLIC], [CHINA, GOV_FIPS, C2S, DOCKER, LOOKALIKE]),
    "fips-govcloud.yaml": ([GOV_FIPS], [COMMERCIAL_FIPS, COMMERCIAL, PUBLIC, CHINA]),
    "china.yaml": ([CHINA], [COMMERCIAL, PUBLIC]),
    "isolated.yaml": ([C2S, "1.dkr.ecr.us-isob-east-1.sc2s.sgov.gov/a"], [COMMERCIAL, PUBLIC]),
    "eu-sovereign.yaml": ([EUSC], [COMMERCIAL]),
    "service-account.yaml": ([COMMERCIAL, DUALSTACK], [PUBLIC, DOCKER]),
    "pod-identity.yaml": ([COMMERCIAL, DUALSTACK, CHINA, GOV_FIPS, C2S, EUSC, PUBLIC], [DOCKER, LOOKALIKE]),
    "mirror.yaml": (
        [COMMERCIAL, "registry.internal.example:5000/team/app", "ecr-cache.internal.example/x"],
        ["registry.internal.example/team/app", DOCKER],
    ),
    "airgapped-vpc-endpoints.yaml": ([COMMERCIAL], [PUBLIC]),
}


def test_every_example_is_listed() -> None:
    assert sorted(p.name for p in CONFIGS) == sorted(EXPECTED)
    readme = (EXAMPLES / "README.md").read_text()
    for path in CONFIGS:
        assert f"`{path.name}`" in readme


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_is_valid_without_warnings(path: Path) -> None:
    result = load_config(path)
    assert result.ok, [str(e) for e in result.errors]
    assert not result.warnings, [str(w) for w in result.warnings]
    assert [lp.provider.name for lp in result.providers] == ["ecr-credential-provider"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_matches(path: Path) -> None:
    patterns = load_config(path).providers[0].provider.match_images or []
    covered, not_covered = EXPECTED[path.name]
    for image in covered:
        assert any(urls_match(p, image) for p in patterns), image
    for image in not_covered:
        assert not any(urls_match(p, image) for p in patterns), image


def test_eks_default_yaml_is_the_json() -> None:
    as_json = json.loads((EXAMPLES / "eks-default.json").read_text())
    assert yaml.safe_load((EXAMPLES / "eks-default.yaml").read_text()) == as_json


def test_eks_patterns_and_host_families_match_one_to_one() -> None:
    """Each pattern of the generated EKS list covers exactly one of the host family images the Go tests
    pull through the kubelet, and each of those images is the ECR registry it names: a host family
    added to registry.py's tables fails here until it has an image there."""
    patterns = load_config(EXAMPLES / "eks-default.json").providers[0].provider.match_images or []
    families = json.loads(HOST_FAMILIES.read_text())
    for family in families:
        host = family["image"].split("/", 1)[0]
        registry = classify_host(host)
        assert registry is not None, host
        assert (registry.service, registry.region) == (family["service"], family["region"]), host
        assert any(urls_match(p, host) for p in patterns), f"no pattern covers {host}"
    covered = {p: [f["image"] for f in families if urls_match(p, f["image"].split("/", 1)[0])] for p in patterns}
    assert {p: len(images) for p, images in covered.items()} == dict.fromkeys(patterns, 1), covered


def test_service_account_example_matches_rbac() -> None:
    prov = load_config(EXAMPLES / "service-account.yaml").providers[0].provider
    assert prov.token_attributes is not None
    audience = prov.token_attributes.service_account_token_audience
    assert prov.token_attributes.cache_type == "ServiceAccount"
    assert "eks.amazonaws.com/ecr-role-arn" in (prov.token_attributes.optional_service_account_annotation_keys or [])
    docs = list(yaml.safe_load_all((EXAMPLES / "rbac" / "service-account-rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": [audience], "verbs": ["request-serviceaccounts-token-audience"]}
    ]
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == "system:nodes"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    workload = list(yaml.safe_load_all((EXAMPLES / "rbac" / "example-workload.yaml").read_text()))
    sa = next(d for d in workload if d["kind"] == "ServiceAccount")
    assert "eks.amazonaws.com/ecr-role-arn" in sa["metadata"]["annotations"]


def test_pod_identity_example_turns_the_mode_on_and_matches_its_rbac() -> None:
    from ecr_kubelet.options import EKS_CLUSTER_NAME_VARIABLE
    from ecr_kubelet.pod_identity import AUDIENCE

    prov = load_config(EXAMPLES / "pod-identity.yaml").providers[0].provider
    env = {e.name: e.value for e in prov.env or []}
    assert env[EKS_CLUSTER_NAME_VARIABLE] == "my-cluster"
    ta = prov.token_attributes
    assert ta is not None and ta.service_account_token_audience == AUDIENCE and ta.cache_type == "ServiceAccount"
    assert prov.match_images == load_config(EXAMPLES / "eks-default.json").providers[0].provider.match_images
    for rbac in (EXAMPLES / "rbac" / "pod-identity-rbac.yaml", REPO / "deploy" / "kubernetes" /
                 "rbac-pod-identity-audience.yaml"):
        docs = list(yaml.safe_load_all(rbac.read_text()))
        role = next(d for d in docs if d["kind"] == "ClusterRole")
        assert role["rules"] == [
            {"apiGroups": [""], "resources": [AUDIENCE], "verbs": ["request-serviceaccounts-token-audience"]}
        ]
        binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
        assert binding["subjects"][0]["name"] == "system:nodes"
        assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_airgapped_env() -> None:
    prov = load_config(EXAMPLES / "airgapped-vpc-endpoints.yaml").providers[0].provider
    env = {e.name: e.value for e in prov.env or []}
    for key in ("AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL_STS", "HTTPS_PROXY", "NO_PROXY"):
        assert key in env
    assert env["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
    assert "169.254.169.254" in env["NO_PROXY"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate(path: Path) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for doc in yaml.safe_load_all(path.read_text()):
        kv.validate(doc, KUBERNETES_VERSION, strict=True)
