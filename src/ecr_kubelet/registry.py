"""Image references and ECR registry hosts.

Classifies the registry host of an image into an ECR family (private in every partition, FIPS,
dual-stack, public) or nothing. Kept free of botocore so a cache hit never loads it; the partition
table below is checked against botocore's own partitions.json by the tests.
"""

from __future__ import annotations

from ecr_kubelet.errors import BadInputError
from ecr_kubelet.models import ImageRef, Registry, normalize_host

__all__ = ["ImageRef", "Registry", "classify_host", "normalize_host", "parse_image", "parse_server_url"]

class RegionGrammar:
    """Region names `PREFIX-NAME-NUMBER` of one partition: botocore's partitions.json regionRegex
    (`^(us|eu|...)-\\w+-\\d+$`) narrowed to DNS labels; NAME is lower-case letters and digits, NUMBER
    ASCII digits. Matched by hand rather than with `re`, which a cache hit does not otherwise load
    (tests/test_registry.py checks every region botocore lists, and random names, against botocore's
    regexes)."""

    __slots__ = ("prefixes",)

    def __init__(self, *prefixes: str) -> None:
        self.prefixes = frozenset(prefixes)

    def match(self, region: str) -> bool:
        return is_region_label(region) and region_prefix(region) in self.prefixes


def region_prefix(region: str) -> str:
    """PREFIX of `PREFIX-NAME-NUMBER` (`us-gov` of `us-gov-west-1`)."""
    return region.rsplit("-", 2)[0]


def is_region_label(region: str) -> bool:
    """Any well-formed region name, known or not: `PREFIX-NAME-NUMBER`, PREFIX one or more hyphenated
    parts of lower-case letters and digits, the first starting with a letter; NAME lower-case letters and
    digits; NUMBER ASCII digits. AWS opens regions under new prefixes (il, mx): those must get credentials
    without a rebuild, as the official provider's any-label pattern gives them."""
    parts = region.split("-")
    if len(parts) < 3 or len(region) > _MAX_REGION or not _is_digits(parts[-1]):
        return False
    return parts[0][:1].isalpha() and all(
        part.isascii() and part.isalnum() and part == part.lower() for part in parts[:-1]
    )


# Known region prefixes of each partition. A region under a known prefix belongs to that partition and
# nowhere else (a China region under the commercial suffix is a look-alike); one under an unknown prefix
# belongs to its suffix's first partition (below).
PARTITION_REGIONS: dict[str, RegionGrammar] = {
    "aws": RegionGrammar("us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx"),
    "aws-cn": RegionGrammar("cn"),
    "aws-us-gov": RegionGrammar("us-gov"),
    "aws-eusc": RegionGrammar("eusc-de"),
    "aws-iso": RegionGrammar("us-iso"),
    "aws-iso-b": RegionGrammar("us-isob"),
    "aws-iso-e": RegionGrammar("eu-isoe"),
    "aws-iso-f": RegionGrammar("us-isof"),
}
_PREFIX_PARTITION = {prefix: pid for pid, grammar in PARTITION_REGIONS.items() for prefix in grammar.prefixes}

# Registry DNS suffix -> the partitions whose registries live under it; a region of a prefix not yet known
# is taken to be in the first.
IPV4_SUFFIXES: dict[str, tuple[str, ...]] = {
    "amazonaws.com": ("aws", "aws-us-gov"),
    "amazonaws.com.cn": ("aws-cn",),
    "amazonaws.eu": ("aws-eusc",),
    "c2s.ic.gov": ("aws-iso",),
    "sc2s.sgov.gov": ("aws-iso-b",),
    "cloud.adc-e.uk": ("aws-iso-e",),
    "csp.hci.ic.gov": ("aws-iso-f",),
}
DUALSTACK_SUFFIXES: dict[str, tuple[str, ...]] = {
    "on.aws": ("aws", "aws-us-gov"),
    "on.amazonwebservices.com.cn": ("aws-cn",),
}
# ECR publishes FIPS registry endpoints only in the US commercial and GovCloud regions.
FIPS_PARTITIONS = frozenset({"aws", "aws-us-gov"})
FIPS_SUFFIXES = frozenset({"amazonaws.com", "on.aws"})

PUBLIC_HOSTS = frozenset({"public.ecr.aws", "ecr-public.aws.com"})
PUBLIC_REGION = "us-east-1"

# A private registry host: ACCOUNT.dkr.ecr[-fips].REGION.SUFFIX, or ACCOUNT.dkr-ecr[-fips].REGION.SUFFIX
# (dual-stack); the first labels, after the 12-digit account, as (label, ...) -> (dual-stack, FIPS).
_PRIVATE_LABELS = {
    ("dkr", "ecr"): (False, False), ("dkr", "ecr-fips"): (False, True),
    ("dkr-ecr",): (True, False), ("dkr-ecr-fips",): (True, True),
}
_MAX_REGION = 40
_IMAGE_MAX = 4096


def parse_image(image: str) -> ImageRef:
    """Split an image into registry host, port and path; raise BadInputError for odd images."""
    if not image or len(image) > _IMAGE_MAX:
        raise BadInputError("image must be a non-empty string of at most 4096 characters")
    if any(ch.isspace() or not ch.isprintable() for ch in image):
        raise BadInputError("image contains whitespace or control characters")
    if "://" in image:
        raise BadInputError("image must not contain a URL scheme")
    first, sep, rest = image.partition("/")
    # Docker's rule: the first component is a registry only if it looks like a host.
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        return ImageRef(host="docker.io", port=None, path=image)
    host, port = _split_port(first)
    _check_host(host)
    return ImageRef(host=host, port=port, path=rest)


def parse_server_url(server_url: str) -> ImageRef:
    """The registry of a Docker credential-helper server URL, as clients send it: `host[:port]`, with or
    without an `http(s)://` scheme and a path (`https://host/v2/`). BadInputError for anything else."""
    text = server_url.strip()
    if not text or len(text) > _IMAGE_MAX:
        raise BadInputError("server URL must be a non-empty string of at most 4096 characters")
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() not in ("https", "http"):
            raise BadInputError("server URL scheme must be https or http")
        text = rest
    cut = min((i for i in map(text.find, "/?#") if i >= 0), default=len(text))
    hostport, path = text[:cut], text[cut + 1 :]
    if not hostport or any(ch.isspace() or not ch.isprintable() for ch in hostport):
        raise BadInputError("server URL has no registry host")
    host, port = _split_port(hostport)
    _check_host(host)
    return ImageRef(host=host, port=port, path=path)


def _split_port(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        raise BadInputError("IP literal registry hosts are not supported")
    host, sep, port_text = hostport.partition(":")
    if not sep:
        return host, None
    if not port_text.isdigit() or not port_text.isascii() or not 0 < int(port_text) < 65536:
        raise BadInputError("image registry port must be a number from 1 to 65535")
    return host, int(port_text)


def _check_host(host: str) -> None:
    labels = host.removesuffix(".").split(".")
    if len(host) > 254 or not all(_is_dns_label(label) for label in labels):
        raise BadInputError("image registry host is not a valid DNS name")


def _is_dns_label(label: str) -> bool:
    """1 to 63 ASCII letters, digits and hyphens, not starting or ending with a hyphen (RFC 1123)."""
    return (0 < len(label) <= 63 and label.isascii() and label.replace("-", "").isalnum()
            and label[0] != "-" and label[-1] != "-")


def _is_digits(text: str) -> bool:
    return text != "" and text.isascii() and text.isdigit()


def region_partition(region: str, partitions: tuple[str, ...]) -> str | None:
    """The partition of `region` under a suffix serving `partitions` (none: not an ECR suffix); None for a
    malformed region or one whose known prefix belongs to another partition."""
    if not partitions or not is_region_label(region):
        return None
    known = _PREFIX_PARTITION.get(region_prefix(region))
    if known is None:
        return partitions[0]
    return known if known in partitions else None


def classify_host(host: str) -> Registry | None:
    """Return the ECR registry behind `host` (any case, optional trailing dot), or None if it is not ECR."""
    name = normalize_host(host)
    if name in PUBLIC_HOSTS:
        return Registry(
            kind="public", host=name, partition="aws", region=PUBLIC_REGION, account=None,
            dualstack=name == "ecr-public.aws.com",
        )
    labels = name.split(".")
    account = labels[0]
    if len(account) != 12 or not _is_digits(account):
        return None
    lead = next((lead for lead in _PRIVATE_LABELS if tuple(labels[1:1 + len(lead)]) == lead), None)
    if lead is None:
        return None
    dualstack, fips = _PRIVATE_LABELS[lead]
    region, suffix = labels[1 + len(lead):2 + len(lead)], ".".join(labels[2 + len(lead):])
    if not region or not 0 < len(region[0]) <= _MAX_REGION:
        return None
    partitions = (DUALSTACK_SUFFIXES if dualstack else IPV4_SUFFIXES).get(suffix, ())
    partition = region_partition(region[0], partitions)
    if partition is None:
        return None
    if fips and (partition not in FIPS_PARTITIONS or suffix not in FIPS_SUFFIXES):
        return None
    return Registry(
        kind="private", host=name, partition=partition, region=region[0], account=account,
        fips=fips, dualstack=dualstack,
    )
