"""Registry host parsing and classification: every ECR family, and no look-alikes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import botocore
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecr_kubelet.errors import BadInputError
from ecr_kubelet.registry import (
    DUALSTACK_SUFFIXES,
    IPV4_SUFFIXES,
    PARTITION_REGIONS,
    ImageRef,
    classify_host,
    parse_image,
    parse_server_url,
)

ACCOUNT = "123456789012"

# host -> (kind, partition, region, fips, dualstack)
POSITIVE = {
    f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com": ("private", "aws", "us-east-1", False, False),
    f"{ACCOUNT}.dkr.ecr.ap-southeast-5.amazonaws.com": ("private", "aws", "ap-southeast-5", False, False),
    f"{ACCOUNT}.dkr.ecr.mx-central-1.amazonaws.com": ("private", "aws", "mx-central-1", False, False),
    f"{ACCOUNT}.dkr.ecr.us-gov-west-1.amazonaws.com": ("private", "aws-us-gov", "us-gov-west-1", False, False),
    f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn": ("private", "aws-cn", "cn-north-1", False, False),
    f"{ACCOUNT}.dkr.ecr.cn-northwest-1.amazonaws.com.cn": ("private", "aws-cn", "cn-northwest-1", False, False),
    f"{ACCOUNT}.dkr.ecr.eusc-de-east-1.amazonaws.eu": ("private", "aws-eusc", "eusc-de-east-1", False, False),
    f"{ACCOUNT}.dkr.ecr.us-iso-east-1.c2s.ic.gov": ("private", "aws-iso", "us-iso-east-1", False, False),
    f"{ACCOUNT}.dkr.ecr.us-isob-east-1.sc2s.sgov.gov": ("private", "aws-iso-b", "us-isob-east-1", False, False),
    f"{ACCOUNT}.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk": ("private", "aws-iso-e", "eu-isoe-west-1", False, False),
    f"{ACCOUNT}.dkr.ecr.us-isof-south-1.csp.hci.ic.gov": ("private", "aws-iso-f", "us-isof-south-1", False, False),
    f"{ACCOUNT}.dkr.ecr-fips.us-east-1.amazonaws.com": ("private", "aws", "us-east-1", True, False),
    f"{ACCOUNT}.dkr.ecr-fips.us-gov-east-1.amazonaws.com": ("private", "aws-us-gov", "us-gov-east-1", True, False),
    f"{ACCOUNT}.dkr-ecr.eu-west-1.on.aws": ("private", "aws", "eu-west-1", False, True),
    f"{ACCOUNT}.dkr-ecr.us-gov-west-1.on.aws": ("private", "aws-us-gov", "us-gov-west-1", False, True),
    f"{ACCOUNT}.dkr-ecr-fips.us-west-2.on.aws": ("private", "aws", "us-west-2", True, True),
    f"{ACCOUNT}.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn": ("private", "aws-cn", "cn-north-1", False, True),
    # Regions under a prefix AWS has not opened yet: the suffix's first partition, no rebuild needed.
    f"{ACCOUNT}.dkr.ecr.xx-east-1.amazonaws.com": ("private", "aws", "xx-east-1", False, False),
    f"{ACCOUNT}.dkr.ecr-fips.xx-central-2.amazonaws.com": ("private", "aws", "xx-central-2", True, False),
    f"{ACCOUNT}.dkr-ecr.nz-north-1.on.aws": ("private", "aws", "nz-north-1", False, True),
    f"{ACCOUNT}.dkr.ecr.cn-new-prefix-east-1.amazonaws.com.cn": ("private", "aws-cn", "cn-new-prefix-east-1", False,
                                                                 False),
    f"{ACCOUNT}.dkr.ecr.us-isoz-east-1.c2s.ic.gov": ("private", "aws-iso", "us-isoz-east-1", False, False),
    "public.ecr.aws": ("public", "aws", "us-east-1", False, False),
    "ecr-public.aws.com": ("public", "aws", "us-east-1", False, True),
}

NEGATIVE = [
    f"{ACCOUNT}.dkr.ecr.us-east-one.amazonaws.com",  # the region's number is digits
    f"{ACCOUNT}.dkr.ecr.us-east-.amazonaws.com",
    f"{ACCOUNT}.dkr.ecr.us--1.amazonaws.com",  # and it has a name
    f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com\n",
    "\u0661" * 12 + ".dkr.ecr.us-east-1.amazonaws.com",  # Arabic-Indic digits are not an account id
    f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com.evil.example",
    f"evil.{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com",
    "12345678901.dkr.ecr.us-east-1.amazonaws.com",  # 11 digits
    "1234567890123.dkr.ecr.us-east-1.amazonaws.com",  # 13 digits
    f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.lol",
    f"{ACCOUNT}.dkr.cat.us-east-1.amazonaws.com",
    f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com",  # China region under the commercial suffix
    f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com.cn",  # commercial region under the China suffix
    f"{ACCOUNT}.dkr.ecr.us-gov-west-1.amazonaws.com.cn",
    f"{ACCOUNT}.dkr.ecr.useast1.amazonaws.com",
    f"{ACCOUNT}.dkr.ecr.us-east.amazonaws.com",
    f"{ACCOUNT}.dkr.ecr.1x-east-1.amazonaws.com",  # a prefix starts with a letter
    f"{ACCOUNT}.dkr.ecr.us-isob-east-1.amazonaws.com",  # a known prefix of another partition
    f"{ACCOUNT}.dkr.ecr.eusc-de-east-1.amazonaws.com",
    f"{ACCOUNT}.dkr.ecr.us-gov-west-1.c2s.ic.gov",
    f"{ACCOUNT}.dkr.ecr.xx-east-1.amazonaws.co",
    f"{ACCOUNT}.dkr.ecr.xx-east-1.amazonaws.com.evil.example",
    f"{ACCOUNT}.dkr.ecr.xx-east-1.evilamazonaws.com",
    f"{ACCOUNT}.dkr.ecr-fips.cn-north-1.amazonaws.com.cn",  # no FIPS registries in China
    f"{ACCOUNT}.dkr.ecr-fips.us-iso-east-1.c2s.ic.gov",
    f"{ACCOUNT}.dkr-ecr.us-east-1.amazonaws.com",  # dual-stack label with the IPv4 suffix
    f"{ACCOUNT}.dkr.ecr.us-east-1.on.aws",  # IPv4 label with the dual-stack suffix
    f"{ACCOUNT}.dkr.ecr..amazonaws.com",
    f"{ACCOUNT}dkr.ecr.us-east-1.amazonaws.com",
    "abcdefghijkl.dkr.ecr.us-east-1.amazonaws.com",
    "public.ecr.aws.evil.example",
    "ecr.aws",
    "xpublic.ecr.aws",
    "docker.io",
    "gcr.io",
    "localhost",
]


@pytest.mark.parametrize("host", sorted(POSITIVE))
def test_every_ecr_host_family_is_classified(host: str) -> None:
    kind, partition, region, fips, dualstack = POSITIVE[host]
    registry = classify_host(host)
    assert registry is not None
    assert (registry.kind, registry.partition, registry.region, registry.fips, registry.dualstack) == (
        kind, partition, region, fips, dualstack,
    )
    assert registry.account == (ACCOUNT if kind == "private" else None)


@pytest.mark.parametrize("host", sorted(POSITIVE))
def test_hosts_are_case_insensitive_and_tolerate_a_trailing_dot(host: str) -> None:
    assert classify_host(host.upper()) == classify_host(host)
    assert classify_host(host + ".") == classify_host(host)


@pytest.mark.parametrize("host", NEGATIVE)
def test_look_alikes_and_foreign_hosts_are_not_ecr(host: str) -> None:
    assert classify_host(host) is None


def test_partition_table_agrees_with_botocore() -> None:
    data = json.loads((Path(botocore.__file__).parent / "data" / "partitions.json").read_text())
    botocore_partitions = {p["id"]: p for p in data["partitions"]}
    assert set(PARTITION_REGIONS) <= set(botocore_partitions)
    for pid, ours in PARTITION_REGIONS.items():
        theirs = re.compile(botocore_partitions[pid]["regionRegex"])
        for region in botocore_partitions[pid]["regions"]:
            if region.endswith("-global"):
                continue
            assert ours.match(region), (pid, region)
            # Every real region belongs to exactly one partition in our table.
            assert [p for p, rx in PARTITION_REGIONS.items() if rx.match(region)] == [pid]
            assert theirs.match(region), (pid, region)  # botocore's own grammar accepts it too
    # every region of a known prefix we classify in the tests is one botocore's regex accepts for that partition
    for _kind, partition, region, _fips, _dual in POSITIVE.values():
        if PARTITION_REGIONS[partition].match(region):
            assert re.match(botocore_partitions[partition]["regionRegex"], region), (partition, region)


@given(st.from_regex(r"\A[a-z]{2,5}(-[a-z]{2,8}){1,2}-[0-9]{1,2}\Z"))
def test_our_region_patterns_never_accept_what_botocore_rejects(region: str) -> None:
    data = json.loads((Path(botocore.__file__).parent / "data" / "partitions.json").read_text())
    for partition in data["partitions"]:
        if partition["id"] in PARTITION_REGIONS and PARTITION_REGIONS[partition["id"]].match(region):
            assert re.match(partition["regionRegex"], region)


# A well-formed region label: PREFIX (one or more parts, the first starting with a letter), NAME, NUMBER.
WELL_FORMED_REGIONS = st.from_regex(r"\A[a-z][a-z0-9]{1,4}(-[a-z0-9]{1,6}){0,2}-[a-z0-9]{1,10}-[0-9]{1,3}\Z")
_SUFFIXES = {**{s: ("dkr.ecr", p) for s, p in IPV4_SUFFIXES.items()},
             **{s: ("dkr-ecr", p) for s, p in DUALSTACK_SUFFIXES.items()}}
_KNOWN_PREFIX = {prefix: pid for pid, grammar in PARTITION_REGIONS.items() for prefix in grammar.prefixes}


@given(WELL_FORMED_REGIONS, st.sampled_from(sorted(_SUFFIXES)))
def test_any_well_formed_region_under_an_ecr_suffix_is_ecr(region: str, suffix: str) -> None:
    label, partitions = _SUFFIXES[suffix]
    registry = classify_host(f"{ACCOUNT}.{label}.{region}.{suffix}")
    known = _KNOWN_PREFIX.get(region.rsplit("-", 2)[0])
    if known is not None and known not in partitions:
        assert registry is None  # a region of another partition under this suffix: a look-alike
        return
    assert registry is not None and registry.region == region
    assert registry.partition == (known or partitions[0])


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.A", min_size=1, max_size=30),
       st.sampled_from(sorted(_SUFFIXES)))
def test_a_malformed_region_label_is_never_ecr(region: str, suffix: str) -> None:
    parts = region.split("-")
    well_formed = (len(parts) >= 3 and parts[0][:1].isalpha() and parts[-1].isdigit()
                   and all(re.fullmatch(r"[a-z0-9]+", part) for part in parts))
    if well_formed:
        return
    label = _SUFFIXES[suffix][0]
    assert classify_host(f"{ACCOUNT}.{label}.{region}.{suffix}") is None


@given(WELL_FORMED_REGIONS, st.sampled_from(sorted(_SUFFIXES)),
       st.sampled_from(["{s}.evil.example", "evil{s}", "{s}x", "x{s}", "{s}.", "{h}"]))
def test_a_look_alike_suffix_is_never_ecr(region: str, suffix: str, shape: str) -> None:
    label = _SUFFIXES[suffix][0]
    host = shape.format(s=suffix, h=suffix.replace(".", "-"))
    if host == suffix + ".":
        return  # a trailing dot is the same host (tested above)
    assert host not in _SUFFIXES
    assert classify_host(f"{ACCOUNT}.{label}.{region}.{host}") is None


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/team/app",
         ImageRef(f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com", None, "team/app")),
        (f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com:443/app",
         ImageRef(f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com", 443, "app")),
        (f"{ACCOUNT}.DKR.ECR.US-EAST-1.AMAZONAWS.COM./app",
         ImageRef(f"{ACCOUNT}.DKR.ECR.US-EAST-1.AMAZONAWS.COM.", None, "app")),
        ("public.ecr.aws/nginx/nginx", ImageRef("public.ecr.aws", None, "nginx/nginx")),
        ("nginx", ImageRef("docker.io", None, "nginx")),
        ("library/nginx", ImageRef("docker.io", None, "library/nginx")),
        ("localhost:5000/app", ImageRef("localhost", 5000, "app")),
        ("registry.example.com/app@sha256:abc", ImageRef("registry.example.com", None, "app@sha256:abc")),
    ],
)
def test_parse_image(image: str, expected: ImageRef) -> None:
    assert parse_image(image) == expected


def test_auth_key_keeps_the_port_and_the_original_spelling() -> None:
    ref = parse_image(f"{ACCOUNT}.DKR.ecr.us-east-1.amazonaws.com:443/app")
    assert ref.auth_key == f"{ACCOUNT}.DKR.ecr.us-east-1.amazonaws.com:443"
    assert ref.normalized_host == f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"


@pytest.mark.parametrize(
    "image",
    ["", " ", "a b/c", "host.example.com/a\tb", "https://123.dkr.ecr.us-east-1.amazonaws.com/app",
     "host.example.com:0/app", "host.example.com:99999/app", "host.example.com:abc/app",
     "bad_host.example.com/app", "-bad.example.com/app", "[::1]:5000/app", "x" * 5000,
     "host..example.com/app", "host.example.com/app\x00", "a" * 64 + ".example.com/app", "bad-.example.com/app"],
)
def test_odd_images_are_rejected(image: str) -> None:
    with pytest.raises(BadInputError):
        parse_image(image)


@given(st.text(max_size=300))
def test_parse_image_never_crashes(image: str) -> None:
    try:
        ref = parse_image(image)
    except BadInputError:
        return
    assert ref.auth_key
    classify_host(ref.host)


@given(st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz.-", max_size=80))
def test_classify_never_accepts_a_host_without_an_ecr_shape(host: str) -> None:
    registry = classify_host(host)
    if registry is not None:
        assert registry.host in {"public.ecr.aws", "ecr-public.aws.com"} or re.fullmatch(
            r"\d{12}\.dkr[.-]ecr(-fips)?\.[a-z0-9-]+\.[a-z0-9.-]+", registry.host
        )


# ---- Docker credential-helper server URLs -------------------------------------------------------

ECR_HOST = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"


@pytest.mark.parametrize(
    ("server_url", "host", "port"),
    [
        (ECR_HOST, ECR_HOST, None),
        (f"https://{ECR_HOST}", ECR_HOST, None),
        (f"https://{ECR_HOST}/v2/", ECR_HOST, None),
        (f"http://{ECR_HOST}:443/v1/", ECR_HOST, 443),
        (f"HTTPS://{ECR_HOST.upper()}.", ECR_HOST.upper() + ".", None),
        (f"  {ECR_HOST}\n", ECR_HOST, None),
        (f"{ECR_HOST}?x=1", ECR_HOST, None),
        ("public.ecr.aws", "public.ecr.aws", None),
        ("https://index.docker.io/v1/", "index.docker.io", None),
        ("localhost:5000", "localhost", 5000),
    ],
)
def test_server_url_with_or_without_scheme_path_or_port(server_url: str, host: str, port: int | None) -> None:
    ref = parse_server_url(server_url)
    assert (ref.host, ref.port) == (host, port)


@pytest.mark.parametrize(
    "server_url",
    ["", "   ", "https://", "ftp://host.example", "unix:///run/x.sock", "user@host.example", "[::1]:5000",
     "host.example:0", "host.example:https", "a b.example", "bad_host.example", "x" * 5000, "host\x00.example"],
)
def test_odd_server_urls_are_rejected(server_url: str) -> None:
    with pytest.raises(BadInputError):
        parse_server_url(server_url)


@pytest.mark.parametrize("host", sorted(POSITIVE))
def test_server_url_and_image_name_agree_on_the_registry(host: str) -> None:
    assert parse_server_url(f"https://{host}/v2/").auth_key == parse_image(f"{host}/team/app").auth_key


@given(st.text(max_size=300))
def test_parse_server_url_never_crashes(server_url: str) -> None:
    try:
        ref = parse_server_url(server_url)
    except BadInputError:
        return
    classify_host(ref.host)
