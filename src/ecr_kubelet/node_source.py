"""Which identity botocore's default credential chain will sign with, named without calling AWS.

The token cache is keyed by this name, so a cached token is only ever handed to the identity that
fetched it. botocore itself cannot be asked without importing it and resolving the credentials (for
a profile with a role, that is an STS call), which a cache hit must not pay; so this module follows
botocore's chain order (`botocore.credentials.create_credential_resolver`) with the standard library:

- environment keys: the access key id;
- profiles (assume-role, web identity, SSO, login, shared credentials, credential_process, config
  keys) and the boto2 files: the profile name and a digest of every file the chain reads;
- web identity from the environment: the role and the token's issuer, subject and audience;
- container credentials: the endpoint and the role it serves (RoleArn, else a hash of the key id);
- instance metadata: the endpoint and the instance profile's role name.

On a cache miss the provider checks that botocore really used the source predicted here
(`creds.method`); if not, the token is not cached. Only the two metadata sources need a request,
and those go to the node-local metadata endpoints, never to AWS.
"""

from __future__ import annotations

import os

from ecr_kubelet import jsoncodec
from ecr_kubelet.hashing import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

# botocore's method names (Credentials.method), one per provider in its default chain.
PROFILE_KEYS = {
    "assume-role": ("role_arn",),
    "sso": ("sso_session", "sso_start_url", "sso_account_id", "sso_role_name"),
    "login": ("login_session",),
    "custom-process": ("credential_process",),
    "config-file": ("aws_access_key_id",),
}
_CONTAINER_HOST = "http://169.254.170.2"
_CONTAINER_ALLOWED_HOSTS = ("169.254.170.23", "fd00:ec2::23", "localhost", "169.254.170.2")
_IMDS_IPV4 = "http://169.254.169.254"
_IMDS_IPV6 = "http://[fd00:ec2::254]"


class NodeSource:
    """The predicted credential source (a botocore method name) and a secret-free identity name."""

    __slots__ = ("fingerprint", "method")

    def __init__(self, method: str, detail: str) -> None:
        self.method = method
        self.fingerprint = f"{method}:{detail}"


def _digest(*parts: bytes | str) -> str:
    hasher = sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "big") + data)
    return hasher.hexdigest()[:32]


class _Unusable(Exception):
    """A file the chain would read exists but is not a readable regular file: name no identity."""


def _read(path: str, limit: int = 1 << 20) -> bytes | None:
    """A regular file's first `limit` bytes; None if absent. Never blocks on a FIFO or device."""
    import errno
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise _Unusable(path) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Unusable(path)
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:
        raise _Unusable(path) from None
    finally:
        os.close(fd)


def _expand(path: str) -> str:
    return os.path.expanduser(path)


def resolve_node_source(env: Mapping[str, str]) -> NodeSource | None:
    """The source botocore's default chain will use, or None when it cannot be told (then: no cache)."""
    try:
        return _resolve(env)
    except _Unusable:
        return None


def _resolve(env: Mapping[str, str]) -> NodeSource | None:
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return NodeSource("env", _digest(env["AWS_ACCESS_KEY_ID"]))
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    config_path = _expand(env.get("AWS_CONFIG_FILE") or "~/.aws/config")
    creds_path = _expand(env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials")
    config_raw, creds_raw = _read(config_path), _read(creds_path)
    config = _profiles(config_raw, config_file=True)
    creds = _profiles(creds_raw, config_file=False)
    if config is None or creds is None:
        return None  # unparsable: botocore will fail or surprise us; do not cache
    section = config.get(profile, {})
    files = _digest(profile, config_path, config_raw or b"", creds_path, creds_raw or b"")

    if "role_arn" in section and "web_identity_token_file" not in section:
        return NodeSource("assume-role", files)
    web = _web_identity(env, section)
    if web is not None:
        return web
    for method in ("sso", "login"):
        if any(key in section for key in PROFILE_KEYS[method]):
            return NodeSource(method, files)
    if "aws_access_key_id" in creds.get(profile, {}):
        return NodeSource("shared-credentials-file", files)
    for method in ("custom-process", "config-file"):
        if any(key in section for key in PROFILE_KEYS[method]):
            return NodeSource(method, files)
    for method, path in (("ec2-credentials-file", env.get("AWS_CREDENTIAL_FILE")),
                         ("boto-config", env.get("BOTO_CONFIG") or "/etc/boto.cfg"),
                         ("boto-config", "~/.boto")):
        raw = _read(_expand(path)) if path else None
        if raw is not None and b"aws_access_key_id" in raw:
            return NodeSource(method, _digest(files, path or "", raw))
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return _container(env)
    if (env.get("AWS_EC2_METADATA_DISABLED") or "").lower() == "true":
        return None
    return _instance_metadata(env, section)


def _profiles(raw: bytes | None, *, config_file: bool) -> dict[str, dict[str, str]] | None:
    """Profile name -> its keys, as botocore reads the config (`[profile x]`) and credentials files."""
    if raw is None:
        return {}
    import configparser

    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(raw.decode("utf-8"))
    except (configparser.Error, UnicodeDecodeError):
        return None
    profiles: dict[str, dict[str, str]] = {}
    for name in parser.sections():
        if config_file:
            name_only = name.strip()
            if name_only.startswith("profile "):
                profile = name_only[len("profile "):].strip()
            elif name_only == "default":
                profile = "default"
            else:
                continue  # [sso-session x], [services x]
        else:
            profile = name.strip()
        profiles.setdefault(profile, {}).update(dict(parser.items(name)))
    return profiles


def _web_identity(env: Mapping[str, str], section: Mapping[str, str]) -> NodeSource | None:
    role = env.get("AWS_ROLE_ARN") or section.get("role_arn")
    token_file = env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or section.get("web_identity_token_file")
    if not role or not token_file:
        return None
    token = _read(_expand(token_file), 64 * 1024)
    if token is None:
        return None
    # The projected token rotates; what it stands for (issuer, subject, audience) does not.
    from ecr_kubelet.identity import jwt_payload

    payload = jwt_payload(token.decode("utf-8", "replace").strip())
    claims = None if payload is None else {key: payload.get(key) for key in ("iss", "sub", "aud")}
    who = jsoncodec.dumps(claims, sort_keys=True) if claims is not None else "token=" + _digest(token)
    return NodeSource("assume-role-with-web-identity", _digest(role, who))


def _container(env: Mapping[str, str]) -> NodeSource | None:
    from urllib.parse import urlsplit

    relative = env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    url = _CONTAINER_HOST + relative if relative else env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
    parts = urlsplit(url)
    # botocore's rule: plain HTTP only to the container endpoints or loopback (the token is sent).
    if not relative and not (parts.scheme == "https" or (parts.scheme == "http" and _local_host(parts.hostname))):
        return None
    headers = {}
    token = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    if token_file:
        raw = _read(token_file, 16 * 1024)
        token = raw.decode("utf-8", "replace").strip() if raw is not None else None
    if token:
        headers["Authorization"] = token
    body = _http("GET", url, headers, _metadata_timeout(env))
    document = _json_object(body)
    if document is None:
        return None
    role = document.get("RoleArn")
    key_id = document.get("AccessKeyId")
    if isinstance(role, str) and role:
        who = "role=" + role
    elif isinstance(key_id, str) and key_id:
        who = "key=" + _digest(key_id)  # no role named: the key itself (refetched when it rotates)
    else:
        return None
    return NodeSource("container-role", _digest(url, who))


def _local_host(host: str | None) -> bool:
    if not host:
        return False
    if host in _CONTAINER_ALLOWED_HOSTS:
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _instance_metadata(env: Mapping[str, str], section: Mapping[str, str]) -> NodeSource | None:
    endpoint = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or section.get("ec2_metadata_service_endpoint")
    if not endpoint:
        mode = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") or section.get(
            "ec2_metadata_service_endpoint_mode", "")
        endpoint = _IMDS_IPV6 if mode.lower() == "ipv6" else _IMDS_IPV4
    endpoint = endpoint.rstrip("/")
    timeout = _metadata_timeout(env)
    headers: dict[str, str] = {}
    token = _http("PUT", endpoint + "/latest/api/token",
                  {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}, timeout)
    if token:
        headers["X-aws-ec2-metadata-token"] = token.decode("ascii", "replace").strip()
    listing = _http("GET", endpoint + "/latest/meta-data/iam/security-credentials/", headers, timeout)
    if not listing:
        return None
    role = listing.decode("utf-8", "replace").strip().splitlines()[0].strip()
    if not role:
        return None
    return NodeSource("iam-role", _digest(endpoint, role))


def _metadata_timeout(env: Mapping[str, str]) -> float:
    try:
        return min(max(float(env.get("AWS_METADATA_SERVICE_TIMEOUT") or 1.0), 0.1), 5.0)
    except ValueError:
        return 1.0


def _http(method: str, url: str, headers: dict[str, str], timeout: float) -> bytes | None:
    """The body of a 200 answer from a node-local metadata endpoint, else None."""
    answer = _plain_http(method, url, headers, timeout)
    if not isinstance(answer, _Unsure):
        return answer
    return _http_client(method, url, headers, timeout)


class _Unsure:
    """_plain_http could not tell: http.client decides."""


_UNSURE = _Unsure()
_MAX_BODY = 64 * 1024
_MAX_HEAD = 16 * 1024


def _plain_http(method: str, url: str, headers: dict[str, str], timeout: float) -> bytes | _Unsure | None:
    """One HTTP/1.1 exchange over a plain socket with an IP-literal `http://` endpoint, as instance
    metadata is (169.254.169.254, fd00:ec2::254): the body of a 200 answer, None for any other answer or
    a network failure, and _UNSURE for anything else (a host name, https, a chunked or odd answer).

    Hand-written because this runs on every cache hit of an EC2 node, where http.client costs more
    than the whole hit (it imports email, ssl and socket's enums: about 40 ms in the binary); what it
    does not handle goes to http.client, which the tests check it against.
    """
    import _socket

    if not url.startswith("http://"):
        return _UNSURE
    hostport, _, path = url[len("http://"):].partition("/")
    if hostport.startswith("["):  # [IPv6]:port
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return _UNSURE
        port = rest[1:] or "80"
    else:
        host, _, port = hostport.partition(":")
        port = port or "80"
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    try:
        _socket.inet_pton(family, host)
    except OSError:
        return _UNSURE  # a host name: leave resolving it to http.client
    fields = [("Host", hostport), *headers.items(), ("Connection", "close")]
    if method == "PUT":
        fields.append(("Content-Length", "0"))
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536) or not all(
        f"{k}{v}".isascii() and f"{k}{v}".isprintable() for k, v in fields
    ) or not (f"{method}{path}".isascii() and f"{method}{path}".isprintable()) or " " in path:
        return _UNSURE
    request = f"{method} /{path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n"
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    data, answer = b"", _parse_answer(b"")
    try:
        sock.settimeout(timeout)
        sock.connect((host, int(port)))
        sock.sendall(request.encode("ascii"))
        while len(data) <= _MAX_HEAD + _MAX_BODY:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            answer = _parse_answer(data)
            if isinstance(answer, tuple) and answer[2] is not None and len(answer[1]) >= answer[2]:
                break  # the whole body is here: the server need not close the connection
    except OSError:
        return None
    finally:
        sock.close()
    if answer is None or isinstance(answer, _Unsure):  # parsed after each read: `answer` is all of `data`
        return _UNSURE
    status, body, length = answer
    if length is not None:
        if len(body) < length:
            return None  # cut short: no answer
        body = body[:length]
    return body[:_MAX_BODY] if status == b"200" else None


def _parse_answer(data: bytes) -> tuple[bytes, bytes, int | None] | _Unsure | None:
    """(status code, body so far, Content-Length) of an HTTP answer; None while its head is incomplete;
    _UNSURE for what _plain_http leaves to http.client (a chunked or malformed answer)."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return None if len(head) <= _MAX_HEAD else _UNSURE
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[0] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return _UNSURE
    fields = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return _UNSURE
        fields[name.strip().lower()] = value.strip()
    if b"transfer-encoding" in fields:
        return _UNSURE
    length = fields.get(b"content-length")
    if length is not None and not (length.isdigit() and len(length) <= 12):
        return _UNSURE
    return status[1], body, None if length is None else int(length)


def _http_client(method: str, url: str, headers: dict[str, str], timeout: float) -> bytes | None:
    """The body of a 200 answer from a node-local metadata endpoint, else None."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
        try:
            connection.request(method, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                               headers=headers)
            response = connection.getresponse()
            body = response.read(64 * 1024)
            return body if response.status == 200 else None
        finally:
            connection.close()
    except (OSError, http.client.HTTPException, ValueError):
        return None


def _json_object(body: bytes | None) -> dict[str, object] | None:
    if body is None:
        return None
    try:
        document = jsoncodec.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None
