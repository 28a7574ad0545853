"""The values a request passes between modules: request, answer, image, registry, identity, token.

Only data and what follows from the data alone; no I/O. Written as plain classes with `__slots__`
rather than dataclasses, because `import dataclasses` loads inspect and ast: about 15 ms of a cache
hit whose whole budget is 25 ms. `Value` gives them what the dataclasses did: immutability,
equality over the fields, a repr that leaves secrets out, and `replace`.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Literal, TypeVar

    V = TypeVar("V", bound="Value")


class Value:
    """Base of the immutable values below; each subclass lists its fields in `__slots__`."""

    __slots__: tuple[str, ...] = ()
    _secret: tuple[str, ...] = ()  # fields left out of repr
    _uncompared: tuple[str, ...] = ()  # fields left out of ==

    def _init(self, **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; use replace()")

    def replace(self: V, **changes: Any) -> V:
        copy = object.__new__(type(self))
        for name in self.__slots__:
            object.__setattr__(copy, name, changes.pop(name) if name in changes else getattr(self, name))
        if changes:
            raise TypeError(f"{type(self).__name__} has no field {next(iter(changes))!r}")
        return copy

    def _compared(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__ if name not in self._uncompared)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__ if name not in self._secret)
        return f"{type(self).__name__}({shown})"


class Request(Value):
    """A validated CredentialProviderRequest."""

    __slots__ = ("api_version", "image", "service_account_annotations", "service_account_token")
    _secret = ("service_account_token",)
    api_version: str
    image: str
    service_account_token: str | None
    service_account_annotations: dict[str, str]

    def __init__(self, api_version: str, image: str, service_account_token: str | None = None,
                 service_account_annotations: dict[str, str] | None = None) -> None:
        self._init(api_version=api_version, image=image, service_account_token=service_account_token,
                   service_account_annotations=service_account_annotations or {})


class Answer(Value):
    """What we tell the kubelet: credentials per auth key and how long to cache them."""

    __slots__ = ("auth", "cache_duration")
    _secret = ("auth",)
    auth: dict[str, tuple[str, str]]  # key -> (username, password)
    cache_duration: str | None  # a Go duration; None: the provider's defaultCacheDuration

    def __init__(self, auth: dict[str, tuple[str, str]], cache_duration: str | None) -> None:
        self._init(auth=auth, cache_duration=cache_duration)


class ImageRef(Value):
    """An image's registry, split the way the kubelet's matcher sees it."""

    __slots__ = ("host", "path", "port")
    host: str  # as written in the image (case and trailing dot kept)
    port: int | None
    path: str

    def __init__(self, host: str, port: int | None, path: str) -> None:
        self._init(host=host, port=port, path=path)

    @property
    def auth_key(self) -> str:
        """The `auth` map key: exactly the registry part of the image, so the kubelet matches it."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def normalized_host(self) -> str:
        """Lower-case host without a trailing dot, for classification and mirror look-ups."""
        return normalize_host(self.host)

    @property
    def normalized_key(self) -> str:
        """`normalized_host[:port]`, as mirrors are configured."""
        return self.normalized_host if self.port is None else f"{self.normalized_host}:{self.port}"


def normalize_host(host: str) -> str:
    return host.lower().removesuffix(".")


class Registry(Value):
    """An ECR registry and the API endpoint variant that serves it."""

    __slots__ = ("account", "dualstack", "fips", "host", "kind", "partition", "region")
    kind: Literal["private", "public"]
    host: str  # normalized
    partition: str
    region: str
    account: str | None  # None for public ECR
    fips: bool
    dualstack: bool

    def __init__(self, kind: Literal["private", "public"], host: str, partition: str, region: str,
                 account: str | None, fips: bool = False, dualstack: bool = False) -> None:
        self._init(kind=kind, host=host, partition=partition, region=region, account=account, fips=fips,
                   dualstack=dualstack)

    @property
    def service(self) -> str:
        """The botocore service that issues this registry's tokens."""
        return "ecr" if self.kind == "private" else "ecr-public"

    @property
    def variant(self) -> str:
        parts = [p for p, on in (("fips", self.fips), ("dualstack", self.dualstack)) if on]
        return "+".join(parts) or "standard"

    def describe(self) -> str:
        if self.kind == "public":
            return f"public ECR ({self.host})"
        return f"ECR registry {self.account} in {self.region} ({self.partition}, {self.variant})"


class Identity(Value):
    """Who fetches the token: the node's credentials, a role assumed with them, or the pod's service
    account; `registry_role` is a per-registry role (roles.py) assumed as the last hop."""

    __slots__ = ("claims", "mode", "node", "pod_identity", "registry_role", "role_arn", "uid", "web_identity_token")
    _secret = ("web_identity_token",)
    _uncompared = ("node",)
    mode: Literal["node", "role", "service-account", "pod-identity"]
    role_arn: str | None
    web_identity_token: str | None
    claims: dict[str, str] | None  # iss, sub, aud of the service-account token
    node: NodeSource | None  # node and role modes: the credential chain's predicted source
    registry_role: str | None
    uid: int  # the user whose credential files the chain reads (default: the running one)
    pod_identity: PodIdentity | None  # pod-identity mode: the cluster, what a pod without association gets

    def __init__(self, mode: Literal["node", "role", "service-account", "pod-identity"], role_arn: str | None = None,
                 web_identity_token: str | None = None, claims: dict[str, str] | None = None,
                 node: NodeSource | None = None, registry_role: str | None = None, uid: int | None = None,
                 pod_identity: PodIdentity | None = None) -> None:
        self._init(mode=mode, role_arn=role_arn, web_identity_token=web_identity_token, claims=claims, node=node,
                   registry_role=registry_role, uid=os.geteuid() if uid is None else uid, pod_identity=pod_identity)

    def fingerprint(self) -> str | None:
        """A stable, secret-free name for this identity in cache keys, or None if it cannot be cached."""
        base = self._base_fingerprint()
        if self.registry_role is None or base is None:
            return base
        return f"registry-role={self.registry_role};via={base}"

    def _base_fingerprint(self) -> str | None:
        if self.mode == "pod-identity":
            return None if self.pod_identity is None else self.pod_identity.fingerprint(self.claims)
        if self.mode == "service-account":
            if self.claims is None:
                return None  # not a JWT: let STS judge it every time
            from ecr_kubelet import jsoncodec

            # JSON, not joined text: no claim value can pass for another claim set's fields
            c = self.claims
            return "web-identity=" + jsoncodec.dumps([self.role_arn, c["iss"], c["sub"], c["aud"]], compact=True)
        if self.node is None or self.node.fingerprint is None:
            return None  # which credentials will sign is unknown: never share a token
        node = f"{self.node.fingerprint};uid={self.uid}"
        return node if self.mode == "node" else f"role={self.role_arn};caller={node}"

    def uncacheable_reason(self) -> str | None:
        """Why `fingerprint()` is None (for -v and diagnose); None when it is not."""
        if self.fingerprint() is not None:
            return None
        if self.mode == "service-account":
            return "a service-account token that is not a JWT"
        if self.node is None:
            return "the node identity was not named"
        return f"the node identity cannot be named: {self.node.reason}"

    def describe(self) -> str:
        if self.mode == "pod-identity" and self.pod_identity is not None:
            return self.pod_identity.describe(self.claims)
        if self.registry_role is not None:
            base = "node credentials" if self.mode == "node" else f"node credentials via {self.role_arn}"
            return f"{base} assuming registry role {self.registry_role}"
        if self.mode == "node":
            return "node credentials"
        if self.mode == "role":
            return f"node credentials assuming {self.role_arn}"
        sub = self.claims["sub"] if self.claims else "unknown subject"
        return f"service account {sub} assuming {self.role_arn}"


class NodeSource:
    """The predicted credential source (a botocore method name) and a secret-free identity name; or,
    when the identity cannot be named, no fingerprint and the reason (`no_credentials`: botocore's
    chain will find none)."""

    __slots__ = ("fingerprint", "method", "no_credentials", "reason")

    def __init__(self, method: str | None, detail: str | None, reason: str = "",
                 no_credentials: bool = False) -> None:
        self.method = method
        self.fingerprint = None if method is None or detail is None else f"{method}:{detail}"
        self.reason = reason
        self.no_credentials = no_credentials

    @classmethod
    def unnamed(cls, reason: str, *, no_credentials: bool = False) -> NodeSource:
        return cls(None, None, reason, no_credentials)

    def __repr__(self) -> str:
        return f"NodeSource({self.fingerprint or self.reason!r})"


class PodIdentity(Value):
    """What pod-identity mode knows before calling eks-auth: the cluster, the endpoint override, and the
    identity a service account without an association gets (None: --sa-without-role fail)."""

    __slots__ = ("cluster", "endpoint", "fallback")
    cluster: str
    endpoint: str  # AWS_ENDPOINT_URL_EKS_AUTH (or AWS_ENDPOINT_URL), "" for the regional endpoint
    fallback: Identity | None

    def __init__(self, cluster: str, endpoint: str, fallback: Identity | None) -> None:
        self._init(cluster=cluster, endpoint=endpoint, fallback=fallback)

    def fingerprint(self, claims: dict[str, str] | None) -> str | None:
        """The identity part of the cache key. Its "pod-identity=" prefix begins no other mode's
        fingerprint (IRSA's is "web-identity=", the node's its credential source), so a pod-identity
        key never equals another mode's."""
        if claims is None:
            return None  # not a JWT: eks-auth judges it every time
        if self.fallback is None:
            without = "fail"
        else:
            fallback = self.fallback.fingerprint()
            if fallback is None:
                return None  # the node identity cannot be named now: what a pod without association gets is unknown
            without = f"[{fallback}]"
        return (f"pod-identity={self.cluster};endpoint={self.endpoint};iss={claims['iss']};sub={claims['sub']};"
                f"aud={claims['aud']};without-association={without}")

    def describe(self, claims: dict[str, str] | None) -> str:
        sub = claims["sub"] if claims else "unknown subject"
        return f"service account {sub} through EKS Pod Identity (cluster {self.cluster})"


# An ECR authorization token lives 12 hours at most (less with short-lived credentials).
MAX_TOKEN_LIFETIME = 12 * 3600.0
CLOCK_SKEW = 60.0  # tolerated between this node's clock and AWS's
MAX_USERNAME = 256
MAX_PASSWORD = 16 * 1024


def is_token_text(value: object, limit: int) -> bool:
    """What a token's username or password may be: printable ASCII, 1 to `limit` characters."""
    return isinstance(value, str) and 0 < len(value) <= limit and value.isascii() and value.isprintable()


class Token(Value):
    """A registry login from ECR's GetAuthorizationToken (bounded as above, by tokens.py and cache.py)."""

    __slots__ = ("cacheable", "expires_at", "fetched_at", "password", "username")
    _secret = ("password",)
    _uncompared = ("cacheable",)
    username: str
    password: str
    expires_at: float | None  # epoch seconds; None when AWS did not say
    fetched_at: float
    cacheable: bool  # False when the credentials that fetched it are not the identity its cache key names

    def __init__(self, username: str, password: str, expires_at: float | None, fetched_at: float,
                 cacheable: bool = True) -> None:
        self._init(username=username, password=password, expires_at=expires_at, fetched_at=fetched_at,
                   cacheable=cacheable)
