"""Every shipped example configuration is valid for the kubelet and matches what it says it matches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ecr_kubelet.image_match import urls_match
from ecr_kubelet.kubelet_config import load_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "credentialproviders"
CONFIGS = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".json", ".yaml", ".yml"))
MANIFESTS = sorted((EXAMPLES / "rbac").glob("*.yaml"))
KUBERNETES_VERSION = "1.34.0"

# The list EKS AL2023 nodes ship (reference/kubelet-protocol.md).
EKS_PATTERNS = [
    "*.dkr.ecr.*.amazonaws.com",
    "*.dkr-ecr.*.on.aws",
    "*.dkr.ecr.*.amazonaws.com.cn",
    "*.dkr-ecr.*.on.amazonwebservices.com.cn",
    "*.dkr.ecr-fips.*.amazonaws.com",
    "*.dkr-ecr-fips.*.on.aws",
    "*.dkr.ecr.*.c2s.ic.gov",
    "*.dkr.ecr.*.sc2s.sgov.gov",
    "*.dkr.ecr.*.cloud.adc-e.uk",
    "*.dkr.ecr.*.csp.hci.ic.gov",
    "*.dkr.ecr.*.amazonaws.eu",
    "public.ecr.aws",
    "ecr-public.aws.com",
]

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


def test_eks_default_is_the_eks_list() -> None:
    as_json = json.loads((EXAMPLES / "eks-default.json").read_text())
    as_yaml = yaml.safe_load((EXAMPLES / "eks-default.yaml").read_text())
    assert as_json == as_yaml
    prov = as_json["providers"][0]
    assert prov["matchImages"] == EKS_PATTERNS
    assert prov["defaultCacheDuration"] == "12h0m0s"
    assert prov["apiVersion"] == "credentialprovider.kubelet.k8s.io/v1"


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
