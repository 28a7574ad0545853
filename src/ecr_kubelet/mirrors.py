"""`--mirror HOST[:PORT]=ECR_HOST`: answer for a mirror or pull-through cache with an ECR registry's token.

One parser for the command line (flags) and for `validate-config`, which checks the `args` of a provider
in the kubelet's config the same way. Standard library only: it runs on every call that passes the flag.
"""

from __future__ import annotations

from ecr_kubelet.errors import BadInputError
from ecr_kubelet.registry import classify_host, normalize_host, parse_image

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ecr_kubelet.models import ImageRef, Registry

FLAG = "--mirror"


def parse_mirror(spec: str) -> tuple[str, str]:
    """(mirror key, ECR host) of one `HOST[:PORT]=ECR_HOST`. The key is the normalized host and the port
    as written: looked up exactly, as the kubelet matches `auth` keys. BadInputError (exit 2) otherwise."""
    mirror, sep, target = spec.partition("=")
    if not sep or not mirror or not target:
        raise BadInputError(f"{FLAG} {spec!r}: expected HOST[:PORT]=ECR_HOST")
    # Only a registry host (and port) is matched, exactly: a path or scheme would be dropped.
    if "://" in mirror or "/" in mirror or "@" in mirror:
        raise BadInputError(f"{FLAG} {spec!r}: {mirror!r} must be HOST[:PORT], without scheme or path")
    try:
        ref = parse_image(mirror + "/x")
    except BadInputError as exc:
        raise BadInputError(f"{FLAG} {spec!r}: {exc}".replace("image registry", "mirror")) from None
    if ref.host == "docker.io" and "." not in mirror:
        raise BadInputError(f"{FLAG} {spec!r}: {mirror!r} is not a registry host")
    if classify_host(target) is None:
        raise BadInputError(f"{FLAG} {spec!r}: {target!r} is not an ECR registry host")
    host = normalize_host(ref.host)
    return (host if ref.port is None else f"{host}:{ref.port}"), target


def resolve_registry(image: ImageRef, mirrors: dict[str, str]) -> Registry | None:
    """The ECR registry whose credentials serve the image's host: itself, or the registry it mirrors.

    A mirror matches host and port exactly as configured, as the kubelet matches `auth` keys: one
    configured without a port serves only images without one.
    """
    target = mirrors.get(image.normalized_key)
    return classify_host(target if target else image.normalized_host)


def parse_mirrors(specs: list[str]) -> dict[str, str]:
    """{mirror key: ECR host} of every `--mirror` value, in order (a later one for the same key wins)."""
    return dict(parse_mirror(spec) for spec in specs)
