"""The node-local metadata endpoints, asked the little that naming the node identity needs.

Instance metadata (IMDSv2: a session token, the role list, iam/info) and the container credentials
endpoint, as node_source.py follows botocore's chain to them. Every exchange obeys the run's deadline:
each connect and each read waits the lesser of its own timeout (AWS_METADATA_SERVICE_TIMEOUT, as
botocore) and what remains of the deadline, and no request starts once nothing remains.

A cache hit on an EC2 node asks instance metadata on every run, so the usual exchange goes over a
plain socket (`plain_http`); whatever that does not handle goes to http.client.
"""

from __future__ import annotations

from ecr_kubelet import jsoncodec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from http.client import HTTPConnection

    from ecr_kubelet.deadline import Deadline

_CONTAINER_ALLOWED_HOSTS = ("169.254.170.23", "fd00:ec2::23", "localhost", "169.254.170.2")
_ROLE_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+=,.@-")
_MAX_BODY = 64 * 1024
_MAX_HEAD = 16 * 1024


class Unnamed(Exception):
    """The identity cannot be told for sure: the message says why."""


class NoCredentials(Exception):
    """botocore's chain ends without credentials."""


class OutOfTime(Unnamed):
    """The deadline left no time to ask the endpoint."""


def bounded(timeout: float, deadline: Deadline | None) -> float:
    """`timeout`, or what remains of the deadline if that is less; OutOfTime when nothing remains."""
    if deadline is None:
        return timeout
    remaining = deadline.remaining()
    if remaining <= 0:
        raise OutOfTime("the deadline passed before the metadata endpoint answered")
    return min(timeout, remaining)


def local_host(host: str | None) -> bool:
    if not host:
        return False
    if host in _CONTAINER_ALLOWED_HOSTS:
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_endpoint(url: str) -> bool:
    """http(s)://host[:port][/], host a name or an IP literal: a metadata endpoint botocore accepts
    and that names one place (anything else is not followed here). By hand: urllib.parse imports re,
    which a cache hit does not load."""
    scheme, separator, rest = url.partition("://")
    if scheme not in ("http", "https") or not separator or not (url.isascii() and url.isprintable()):
        return False
    hostport = rest.removesuffix("/")
    if hostport.startswith("["):
        host, bracket, port = hostport[1:].partition("]")
        allowed = set("0123456789abcdefABCDEF:.")
        if not bracket or (port and not port.startswith(":")):
            return False
        port = port[1:]
    else:
        host, _, port = hostport.partition(":")
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
    return bool(host) and set(host) <= allowed and (
        port == "" or (port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536))



def instance_identity(env: Mapping[str, str], endpoint: str, deadline: Deadline | None = None) -> tuple[str, str]:
    """The instance profile's role name and ARN (so its account: the same role name in two accounts is two
    identities), as botocore's InstanceMetadataFetcher finds the role. Raises NoCredentials where
    botocore finds none, Unnamed where the answers name no role for sure."""
    if env.get("AWS_EC2_METADATA_DISABLED", "false").lower() == "true":
        raise NoCredentials
    endpoint = endpoint.rstrip("/")
    timeout = metadata_timeout(env)
    headers: dict[str, str] = {}
    token = http("PUT", endpoint + "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}, timeout,
                 deadline)
    if token:
        # botocore sends the token as it came: name nothing when that is not a plain header value
        text = token.decode("ascii", "replace")
        if not (text.isprintable() and text == text.strip() and "\ufffd" not in text):
            raise Unnamed("instance metadata answered the session token request with something that is not one")
        headers["X-aws-ec2-metadata-token"] = text
    listing = http("GET", endpoint + "/latest/meta-data/iam/security-credentials/", headers, timeout, deadline)
    if not listing:
        raise NoCredentials  # no answer, an error or an empty list: botocore finds no role either
    # botocore requests the credentials of the whole answer as one role name: name only a plain one.
    role = listing.decode("ascii", "replace")
    if not (len(role) <= 64 and set(role) <= _ROLE_NAME_CHARACTERS):
        raise Unnamed("instance metadata answered the role list with something that is not a role name")
    info = json_object(http("GET", endpoint + "/latest/meta-data/iam/info", headers, timeout, deadline))
    profile_arn = None if info is None else info.get("InstanceProfileArn")
    if not (isinstance(profile_arn, str) and profile_arn.startswith("arn:") and profile_arn.isascii()
            and profile_arn.isprintable() and len(profile_arn) <= 2048):
        raise Unnamed("instance metadata gave no instance profile ARN (iam/info)")
    return role, profile_arn


def metadata_timeout(env: Mapping[str, str]) -> float:
    try:
        return min(max(float(env.get("AWS_METADATA_SERVICE_TIMEOUT") or 1.0), 0.1), 5.0)
    except ValueError:
        return 1.0


def http(method: str, url: str, headers: dict[str, str], timeout: float,
         deadline: Deadline | None = None) -> bytes | None:
    """The body of a 200 answer from a node-local metadata endpoint, else None (an error, no answer in
    time). OutOfTime when the deadline leaves no time to ask."""
    bounded(timeout, deadline)
    answer = plain_http(method, url, headers, timeout, deadline)
    if not isinstance(answer, Unsure):
        return answer
    return http_client(method, url, headers, timeout, deadline)


class Unsure:
    """plain_http could not tell: http.client decides."""


UNSURE = Unsure()
_MAX_BODY = 64 * 1024
_MAX_HEAD = 16 * 1024


def plain_http(method: str, url: str, headers: dict[str, str], timeout: float,
               deadline: Deadline | None = None) -> bytes | Unsure | None:
    """One HTTP/1.1 exchange over a plain socket with an IP-literal `http://` endpoint, as instance
    metadata is (169.254.169.254, fd00:ec2::254): the body of a 200 answer, None for any other answer or
    a network failure, and UNSURE for anything else (a host name, https, a chunked or odd answer).

    Hand-written because this runs on every cache hit of an EC2 node, where http.client costs more
    than the whole hit (it imports email, ssl and socket's enums: about 40 ms in the binary); what it
    does not handle goes to http.client, which the tests check it against.
    """
    import _socket

    if not url.startswith("http://"):
        return UNSURE
    hostport, _, path = url[len("http://"):].partition("/")
    if hostport.startswith("["):  # [IPv6]:port
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return UNSURE
        port = rest[1:] or "80"
    else:
        host, _, port = hostport.partition(":")
        port = port or "80"
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    try:
        _socket.inet_pton(family, host)
    except OSError:
        return UNSURE  # a host name: leave resolving it to http.client
    fields = [("Host", hostport), *headers.items(), ("Connection", "close")]
    if method == "PUT":
        fields.append(("Content-Length", "0"))
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536) or not all(
        f"{k}{v}".isascii() and f"{k}{v}".isprintable() for k, v in fields
    ) or not (f"{method}{path}".isascii() and f"{method}{path}".isprintable()) or " " in path:
        return UNSURE
    request = f"{method} /{path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n"
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    data, answer = b"", parse_answer(b"")
    try:
        sock.settimeout(bounded(timeout, deadline))
        sock.connect((host, int(port)))
        sock.settimeout(bounded(timeout, deadline))
        sock.sendall(request.encode("ascii"))
        while len(data) <= _MAX_HEAD + _MAX_BODY:
            sock.settimeout(bounded(timeout, deadline))
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            answer = parse_answer(data)
            if isinstance(answer, tuple) and answer[2] is not None and len(answer[1]) >= answer[2]:
                break  # the whole body is here: the server need not close the connection
    except (OSError, OutOfTime):  # the deadline cut the exchange short: no answer, as at a timeout
        return None
    finally:
        sock.close()
    if answer is None or isinstance(answer, Unsure):  # parsed after each read: `answer` is all of `data`
        return UNSURE
    status, body, length = answer
    if length is not None:
        if len(body) < length:
            # Larger than we read: not "no answer" (botocore would read it all), so http.client decides.
            return UNSURE if len(data) > _MAX_HEAD + _MAX_BODY else None  # else cut short: no answer
        body = body[:length]
    if len(body) > _MAX_BODY:
        return UNSURE  # read whole by luck of the reads, but larger than we take: as above
    return body if status == b"200" else None


def parse_answer(data: bytes) -> tuple[bytes, bytes, int | None] | Unsure | None:
    """(status code, body so far, Content-Length) of an HTTP answer; None while its head is incomplete;
    UNSURE for what plain_http leaves to http.client (a chunked or malformed answer)."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return None if len(head) <= _MAX_HEAD else UNSURE
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[0] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return UNSURE
    fields = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return UNSURE
        fields[name.strip().lower()] = value.strip()
    if b"transfer-encoding" in fields:
        return UNSURE
    length = fields.get(b"content-length")
    if length is not None and not (length.isdigit() and len(length) <= 12):
        return UNSURE
    return status[1], body, None if length is None else int(length)


def http_client(method: str, url: str, headers: dict[str, str], timeout: float,
                deadline: Deadline | None = None) -> bytes | None:
    """The body of a 200 answer from a node-local metadata endpoint, else None; by http.client, whose
    socket waits at most the lesser of `timeout` and what remains of the deadline at each step."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        connection = connection_class(parts.hostname or "", parts.port, timeout=bounded(timeout, deadline))
        try:
            connection.connect()
            _rebound(connection, timeout, deadline)
            connection.request(method, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                               headers=headers)
            _rebound(connection, timeout, deadline)
            response = connection.getresponse()
            _rebound(connection, timeout, deadline)
            body = response.read(64 * 1024)
            return body if response.status == 200 else None
        finally:
            connection.close()
    except (OSError, http.client.HTTPException, ValueError, OutOfTime):
        return None


def _rebound(connection: HTTPConnection, timeout: float, deadline: Deadline | None) -> None:
    """Size the connection's next waits by what remains of the deadline."""
    if connection.sock is not None:
        connection.sock.settimeout(bounded(timeout, deadline))


def json_object(body: bytes | None) -> dict[str, object] | None:
    if body is None:
        return None
    try:
        document = jsoncodec.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None
