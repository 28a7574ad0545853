"""Image references and ECR registry hosts.

Classifies the registry host of an image into an ECR family (private in every partition, FIPS,
dual-stack, public) or nothing. Kept free of botocore so a cache hit never loads it; the partition
table below is checked against botocore's own partitions.json by the tests.
"""

from __future__ import annotations

import re

from ecr_kubelet.errors import BadInputError
from ecr_kubelet.models import ImageRef, Registry, normalize_host

__all__ = ["ImageRef", "Registry", "classify_host", "normalize_host", "parse_image", "parse_server_url"]

# Region name grammar per partition (botocore partitions.json regionRegex, narrowed to DNS labels).
PARTITION_REGIONS: dict[str, re.Pattern[str]] = {
    "aws": re.compile(r"^(us|eu|ap|sa|ca|me|af|il|mx)-[a-z0-9]+-\d+$"),
    "aws-cn": re.compile(r"^cn-[a-z0-9]+-\d+$"),
    "aws-us-gov": re.compile(r"^us-gov-[a-z0-9]+-\d+$"),
    "aws-eusc": re.compile(r"^eusc-de-[a-z0-9]+-\d+$"),
    "aws-iso": re.compile(r"^us-iso-[a-z0-9]+-\d+$"),
    "aws-iso-b": re.compile(r"^us-isob-[a-z0-9]+-\d+$"),
    "aws-iso-e": re.compile(r"^eu-isoe-[a-z0-9]+-\d+$"),
    "aws-iso-f": re.compile(r"^us-isof-[a-z0-9]+-\d+$"),
}

# Registry DNS suffix -> the partitions whose registries live under it.
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

_PRIVATE_HOST = re.compile(
    r"^(?P<account>\d{12})\."
    r"(?:(?P<ipv4>dkr\.ecr)|(?P<dual>dkr-ecr))(?P<fips>-fips)?\."
    r"(?P<region>[a-z0-9-]{1,40})\.(?P<suffix>[a-z0-9.-]+)$"
)
_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
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
    if len(host) > 254 or not all(_HOST_LABEL.match(label) for label in labels):
        raise BadInputError("image registry host is not a valid DNS name")


def classify_host(host: str) -> Registry | None:
    """Return the ECR registry behind `host` (any case, optional trailing dot), or None if it is not ECR."""
    name = normalize_host(host)
    if name in PUBLIC_HOSTS:
        return Registry(
            kind="public", host=name, partition="aws", region=PUBLIC_REGION, account=None,
            dualstack=name == "ecr-public.aws.com",
        )
    match = _PRIVATE_HOST.match(name)
    if match is None:
        return None
    suffixes = IPV4_SUFFIXES if match["ipv4"] else DUALSTACK_SUFFIXES
    partitions = suffixes.get(match["suffix"], ())
    region = match["region"]
    partition = next((p for p in partitions if PARTITION_REGIONS[p].match(region)), None)
    if partition is None:
        return None
    fips = match["fips"] is not None
    if fips and (partition not in FIPS_PARTITIONS or match["suffix"] not in FIPS_SUFFIXES):
        return None
    return Registry(
        kind="private", host=name, partition=partition, region=region, account=match["account"],
        fips=fips, dualstack=match["dual"] is not None,
    )


def configured_endpoint(service: str) -> str | None:
    """The API endpoint the operator set for `service`, from the process environment (awsapi's view;
    the request path uses Options.endpoints, read once)."""
    import os

    from ecr_kubelet.options import configured_endpoints

    return configured_endpoints(os.environ).get(service)
