"""Which identity botocore's default credential chain will sign with, named without calling AWS.

The token cache is keyed by this name, so a cached token is only ever handed to the identity that
fetched it. botocore itself cannot be asked without importing it and resolving the credentials (for
a profile with a role, that is an STS call), which a cache hit must not pay; so this module follows
botocore's chain (`botocore.credentials.create_credential_resolver`) with the standard library, step
by step and in its order:

- the profile: `AWS_DEFAULT_PROFILE`, then `AWS_PROFILE` (botocore's `profile` variable; a set but
  empty value counts as set), else `default`;
- environment keys: the access key id;
- profiles (assume-role, web identity, SSO, shared credentials, credential_process, config keys) and
  the boto2 file: the profile name, a digest of every file the chain reads, and what a role is
  assumed with when that is outside the files (environment, container or instance metadata);
- web identity: the role and the token's issuer, subject and audience;
- container credentials: the endpoint and the role it serves (RoleArn, else a hash of the key id);
- instance metadata: the endpoint, the role name and the instance profile's ARN (its account).

Wherever botocore would fail, or take a path this module does not follow exactly, the answer is
"not cacheable" (`NodeSource.fingerprint` is None, `reason` says why): botocore then decides on every
run and no token is shared. On a cache miss the provider also checks that botocore really used the
predicted source (`creds.method`). Only the two metadata sources need a request, and those go to the
node-local metadata endpoints, never to AWS.
"""

from __future__ import annotations

import os

from ecr_kubelet import jsoncodec
from ecr_kubelet.hashing import sha256
from ecr_kubelet.models import NodeSource

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

_CONTAINER_HOST = "http://169.254.170.2"
_CONTAINER_ALLOWED_HOSTS = ("169.254.170.23", "fd00:ec2::23", "localhost", "169.254.170.2")
_IMDS_IPV4 = "http://169.254.169.254"
_IMDS_IPV6 = "http://[fd00:ec2::254]"
# botocore's CanonicalNameCredentialSourcer: credential_source values and what each one names.
_CREDENTIAL_SOURCES = ("Environment", "Ec2InstanceMetadata", "EcsContainer")
_SSO_PROFILE_KEYS = ("sso_role_name", "sso_account_id")
_SSO_REQUIRED_KEYS = ("sso_role_name", "sso_account_id", "sso_start_url", "sso_region")
_ROLE_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+=,.@-")


class _Unnamed(Exception):
    """The identity cannot be told for sure: the message says why."""


class _NoCredentials(Exception):
    """botocore's chain ends without credentials."""


def _digest(*parts: bytes | str) -> str:
    hasher = sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "big") + data)
    return hasher.hexdigest()[:32]


def _read(path: str, limit: int = 1 << 20) -> bytes | None:
    """A regular file's first `limit` bytes; None if absent. Never blocks on a FIFO or device."""
    import errno
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise _Unnamed(f"{path!r} cannot be read") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Unnamed(f"{path!r} is not a regular file")
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size >= limit:
            raise _Unnamed(f"{path!r} is larger than {limit} bytes")
        return b"".join(chunks)
    except OSError:
        raise _Unnamed(f"{path!r} cannot be read") from None
    finally:
        os.close(fd)


def _config_path(env: Mapping[str, str], variable: str, default: str) -> str:
    """A shared file's path as botocore finds it: the variable when set (even empty), expanded."""
    path = env.get(variable, default)
    if "$" in path:
        raise _Unnamed(f"{variable} names environment variables")  # botocore expands them: not followed
    return os.path.expanduser(path)


def resolve_node_source(env: Mapping[str, str]) -> NodeSource:
    """The source botocore's default chain will use, or why it cannot be told (then: no cache).

    Never raises: anything unexpected while naming the identity only makes it "not cacheable"."""
    try:
        return _Chain(env).resolve()
    except _NoCredentials:
        return NodeSource.unnamed("the default credential chain finds no credentials", no_credentials=True)
    except _Unnamed as exc:
        return NodeSource.unnamed(str(exc))
    except Exception as exc:  # a defect here must cost the cache, never the pull
        return NodeSource.unnamed(f"naming the node identity failed ({type(exc).__name__})")


class _Chain:
    """botocore's default chain for one environment, as far as naming the identity needs it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        # botocore's `profile` variable: AWS_DEFAULT_PROFILE first, set-but-empty counts as set.
        explicit = next((env[name] for name in ("AWS_DEFAULT_PROFILE", "AWS_PROFILE") if name in env), None)
        self.profile = explicit or "default"
        self.config_path = _config_path(env, "AWS_CONFIG_FILE", "~/.aws/config")
        self.creds_path = _config_path(env, "AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
        self.config_raw, self.creds_raw = _read(self.config_path), _read(self.creds_path)
        config_sections = _sections(self.config_raw, self.config_path)
        self.creds = _sections(self.creds_raw, self.creds_path)
        self.config, self.sso_sessions = _profile_map(config_sections)
        # botocore's full_config: the config file's profiles, each updated by the credentials file's.
        self.full: dict[str, dict[str, str]] = {name: dict(keys) for name, keys in self.config.items()}
        for name, keys in self.creds.items():
            self.full.setdefault(name, {}).update(keys)
        if explicit is not None and explicit not in self.full:
            raise _Unnamed(f"the profile {explicit!r} is in neither AWS config file")  # ProfileNotFound
        self.imds_endpoint = self._imds_settings()
        self.files = _digest(self.profile, self.config_path, self.config_raw or b"", self.creds_path,
                             self.creds_raw or b"")

    def _setting(self, variable: str, key: str) -> str | None:
        """A botocore config variable: the environment's (set counts, even empty), else the profile's."""
        return self.env[variable] if variable in self.env else self.full.get(self.profile, {}).get(key)

    def _imds_settings(self) -> str:
        """What create_credential_resolver reads, and fails on, before any provider runs; the instance
        metadata endpoint it will use."""
        for variable, key in (("AWS_METADATA_SERVICE_TIMEOUT", "metadata_service_timeout"),
                              ("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "metadata_service_num_attempts")):
            value = self._setting(variable, key)
            if value is not None:
                try:
                    int(value)
                except ValueError:
                    raise _Unnamed(f"{variable} is not a whole number") from None  # botocore fails on it
        mode = self._setting("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "ec2_metadata_service_endpoint_mode")
        if mode is not None:
            mode = mode.lower()
            if mode not in ("ipv4", "ipv6"):
                raise _Unnamed("the instance metadata endpoint mode is neither ipv4 nor ipv6")
        elif (self._setting("AWS_IMDS_USE_IPV6", "imds_use_ipv6") or "").lower() == "true":
            mode = "ipv6"
        endpoint = self._setting("AWS_EC2_METADATA_SERVICE_ENDPOINT", "ec2_metadata_service_endpoint")
        if not endpoint:
            return _IMDS_IPV6 if mode == "ipv6" else _IMDS_IPV4
        if not _plain_endpoint(endpoint):
            raise _Unnamed("the instance metadata endpoint is not a plain http(s)://host[:port] URL")
        return endpoint

    def resolve(self) -> NodeSource:
        env = self.env
        source = self._env_keys()
        if source is not None:
            return NodeSource("env", source)
        profile = self.full.get(self.profile, {})
        if "role_arn" in profile and "web_identity_token_file" not in profile:
            return NodeSource("assume-role", _digest(self.files, self._assumed_with(self.profile, [])))
        named = self._profile_chain(self.profile, with_env=True)
        if named is not None:
            return NodeSource(named[0], _digest(self.files, named[1]))
        if "AWS_CREDENTIAL_FILE" in env:
            raise _Unnamed("AWS_CREDENTIAL_FILE (the EC2 tools' file) is set")  # not followed
        boto = self._boto_config()
        if boto is not None:
            return NodeSource("boto-config", _digest(self.files, boto))
        if "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" in env or "AWS_CONTAINER_CREDENTIALS_FULL_URI" in env:
            return NodeSource("container-role", self._container())
        return NodeSource("iam-role", self._instance_metadata())

    # -- the providers, in botocore's order ----------------------------------------------------------

    def _env_keys(self) -> str | None:
        key = self.env.get("AWS_ACCESS_KEY_ID", "")
        if not key:
            return None
        if not self.env.get("AWS_SECRET_ACCESS_KEY"):
            raise _Unnamed("AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY")  # botocore fails
        return _digest(key)

    def _assumed_with(self, name: str, visited: list[str]) -> str:
        """What the role of profile `name` is assumed with, beyond the files (AssumeRoleProvider)."""
        profile = self.full[name]
        source_profile, credential_source = profile.get("source_profile"), profile.get("credential_source")
        if (source_profile is None) == (credential_source is None):
            raise _Unnamed(f"the profile {name!r} needs exactly one of source_profile and credential_source")
        if credential_source is not None:
            if credential_source == "Environment":
                keys = self._env_keys()
                if keys is None:
                    raise _Unnamed(f"the profile {name!r} assumes its role with environment keys; none are set")
                return "env:" + keys
            try:
                if credential_source == "EcsContainer":
                    return "container:" + self._container()
                if credential_source == "Ec2InstanceMetadata":
                    return "imds:" + self._instance_metadata()
            except _NoCredentials:
                raise _Unnamed(f"the credential_source of {name!r} has no credentials") from None
            raise _Unnamed(f"the profile {name!r} has an unknown credential_source")
        assert source_profile is not None
        if source_profile not in self.full:
            raise _Unnamed(f"the source_profile of {name!r} does not exist")
        source = self.full[source_profile]
        static = "aws_access_key_id" in source or "aws_secret_access_key" in source
        if source_profile in visited and (source_profile != name or not static):
            raise _Unnamed(f"the source_profile of {name!r} loops")
        visited.append(source_profile)
        if static or not ("role_arn" in source and "web_identity_token_file" not in source):
            named = self._profile_chain(source_profile, with_env=False)
            if named is None:
                raise _Unnamed(f"the source profile {source_profile!r} has no credentials")
            return f"{named[0]}:{named[1]}"
        return "role:" + self._assumed_with(source_profile, visited)

    def _profile_chain(self, name: str, *, with_env: bool) -> tuple[str, str] | None:
        """ProfileProviderBuilder's providers for one profile: (method, detail beyond the files)."""
        profile = self.full.get(name, {})
        web = self._web_identity(profile, with_env)
        if web is not None:
            return "assume-role-with-web-identity", web
        if any(key in profile for key in _SSO_PROFILE_KEYS):
            self._check_sso(name, profile)
            return "sso", ""
        creds = self.creds.get(name, {})
        if "aws_access_key_id" in creds:
            if "aws_secret_access_key" not in creds:
                raise _Unnamed(f"the profile {name!r} in the credentials file has no secret key")
            return "shared-credentials-file", ""
        if "login_session" in profile:
            raise _Unnamed("login profiles are not cached")  # needs botocore[crt]; not followed
        if "credential_process" in profile:
            return "custom-process", ""
        config = self.config.get(name, {})
        if "aws_access_key_id" in config:
            if "aws_secret_access_key" not in config:
                raise _Unnamed(f"the profile {name!r} in the config file has no secret key")
            return "config-file", ""
        return None

    def _web_identity(self, profile: Mapping[str, str], with_env: bool) -> str | None:
        def setting(key: str, variable: str) -> str | None:
            if with_env and variable in self.env:
                return self.env[variable]
            return profile.get(key)

        token_file = setting("web_identity_token_file", "AWS_WEB_IDENTITY_TOKEN_FILE")
        if not token_file:
            return None
        role = setting("role_arn", "AWS_ROLE_ARN")
        if not role:
            raise _Unnamed("a web identity token file is set without a role ARN")
        token = _read(token_file, 64 * 1024)
        if token is None:
            raise _Unnamed("the web identity token file does not exist")
        # The projected token rotates; what it stands for (issuer, subject, audience) does not.
        from ecr_kubelet.claims import jwt_payload

        payload = jwt_payload(token.decode("utf-8", "replace").strip())
        claims = None if payload is None else {key: payload.get(key) for key in ("iss", "sub", "aud")}
        who = jsoncodec.dumps(claims, sort_keys=True) if claims is not None else "token=" + _digest(token)
        return _digest(role, who)

    def _check_sso(self, name: str, profile: Mapping[str, str]) -> None:
        """SSOProvider's checks: what it would refuse is not named."""
        resolved = dict(profile)
        required = list(_SSO_REQUIRED_KEYS)
        session_name = profile.get("sso_session")
        if session_name is not None:
            if session_name not in self.sso_sessions:
                raise _Unnamed(f"the sso-session of {name!r} does not exist")
            for key, value in self.sso_sessions[session_name].items():
                if resolved.get(key, value) != value:
                    raise _Unnamed(f"the profile {name!r} and its sso-session disagree")
                resolved[key] = value
            required.append("sso_session")
        if any(key not in resolved for key in required):
            raise _Unnamed(f"the SSO profile {name!r} is incomplete")

    def _boto_config(self) -> str | None:
        """BotoProvider: the first boto2 file with a [Credentials] key id."""
        paths = [self.env["BOTO_CONFIG"]] if "BOTO_CONFIG" in self.env else ["/etc/boto.cfg", "~/.boto"]
        for path in paths:
            if "$" in path:
                raise _Unnamed("BOTO_CONFIG names environment variables")
            expanded = os.path.expanduser(path)
            raw = _read(expanded)
            if raw is None:
                continue
            credentials = _sections(raw, expanded).get("Credentials", {})
            if "aws_access_key_id" in credentials:
                if "aws_secret_access_key" not in credentials:
                    raise _Unnamed(f"{expanded!r} has no secret key")
                return _digest(expanded, raw)
        return None

    def _container(self) -> str:
        return _container(self.env)

    def _instance_metadata(self) -> str:
        return _instance_metadata(self.env, self.imds_endpoint)


def _sections(raw: bytes | None, path: str) -> dict[str, dict[str, str]]:
    """An INI file's sections as botocore's raw_config_parse reads them (strict: duplicates fail)."""
    if raw is None:
        return {}
    import configparser

    parser = configparser.RawConfigParser()
    try:
        parser.read_string(raw.decode("utf-8"))
    except (configparser.Error, UnicodeDecodeError):
        raise _Unnamed(f"{path!r} cannot be parsed") from None  # botocore: ConfigParseError
    sections: dict[str, dict[str, str]] = {}
    for name in parser.sections():
        values = dict(parser.items(name))
        for value in values.values():
            # botocore reads an indented block as a nested section, and fails on a line without "="
            if value.startswith("\n") and any(line.strip() and "=" not in line for line in value.splitlines()):
                raise _Unnamed(f"{path!r} cannot be parsed")
        sections[name] = values
    return sections


def _profile_map(sections: dict[str, dict[str, str]]) -> tuple[dict[str, dict[str, str]],
                                                                  dict[str, dict[str, str]]]:
    """The config file's profiles and sso-sessions, as botocore's build_profile_map makes them; a
    section name it would read differently from this (quotes, more words) is not named."""
    profiles: dict[str, dict[str, str]] = {}
    sso_sessions: dict[str, dict[str, str]] = {}
    default = sections.get("default")
    for key, values in sections.items():
        for prefix, target in (("profile", profiles), ("sso-session", sso_sessions)):
            if key.startswith(prefix):
                words = key.split()
                if any(quote in key for quote in "\"'\\") or (len(words) != 2 and key != prefix) or (
                        words[0] != prefix):
                    raise _Unnamed(f"the config section [{key}] is not followed")
                if len(words) == 2:
                    target[words[1]] = values
                break
    if default is not None:
        if "default" in profiles:
            raise _Unnamed("the config file has both [default] and [profile default]")
        profiles["default"] = default
    return profiles, sso_sessions


def _container(env: Mapping[str, str]) -> str:
    from urllib.parse import urlsplit

    if "AWS_CONTAINER_CREDENTIALS_FULL_URI" not in env and "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" not in env:
        raise _Unnamed("no container credentials endpoint is set")
    if "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" in env:
        relative = env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]
        url = _CONTAINER_HOST + relative
    else:
        url = env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
        parts = urlsplit(url)
        # botocore's rule: plain HTTP only to the container endpoints or loopback (the token is sent).
        if not (parts.scheme == "https" or (parts.scheme == "http" and _local_host(parts.hostname))):
            raise _Unnamed("the container credentials URL is not one botocore accepts")
    headers = {}
    token: str | None = None
    if "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" in env:
        raw = _read(env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"], 16 * 1024)
        if raw is None:
            raise _Unnamed("the container authorization token file does not exist")
        try:
            token = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Unnamed("the container authorization token file is not UTF-8") from None
    elif "AWS_CONTAINER_AUTHORIZATION_TOKEN" in env:
        token = env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    if token is not None:
        if "\r" in token or "\n" in token:
            raise _Unnamed("the container authorization token is not a header value")  # botocore refuses it
        headers["Authorization"] = token
    body = _http("GET", url, headers, _metadata_timeout(env))
    document = _json_object(body)
    if document is None:
        raise _Unnamed("the container credentials endpoint gave no credentials")
    role = document.get("RoleArn")
    key_id = document.get("AccessKeyId")
    if isinstance(role, str) and role:
        who = "role=" + role
    elif isinstance(key_id, str) and key_id:
        who = "key=" + _digest(key_id)  # no role named: the key itself (refetched when it rotates)
    else:
        raise _Unnamed("the container credentials endpoint named neither a role nor a key")
    return _digest(url, who)


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


def _plain_endpoint(url: str) -> bool:
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


def _instance_metadata(env: Mapping[str, str], endpoint: str) -> str:
    """The instance profile's role and ARN (so its account: the same role name in two accounts is two
    identities), as botocore's InstanceMetadataFetcher finds the role."""
    if env.get("AWS_EC2_METADATA_DISABLED", "false").lower() == "true":
        raise _NoCredentials
    endpoint = endpoint.rstrip("/")
    timeout = _metadata_timeout(env)
    headers: dict[str, str] = {}
    token = _http("PUT", endpoint + "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}, timeout)
    if token:
        # botocore sends the token as it came: name nothing when that is not a plain header value
        text = token.decode("ascii", "replace")
        if not (text.isprintable() and text == text.strip() and "\ufffd" not in text):
            raise _Unnamed("instance metadata answered the session token request with something that is not one")
        headers["X-aws-ec2-metadata-token"] = text
    listing = _http("GET", endpoint + "/latest/meta-data/iam/security-credentials/", headers, timeout)
    if not listing:
        raise _NoCredentials  # no answer, an error or an empty list: botocore finds no role either
    # botocore requests the credentials of the whole answer as one role name: name only a plain one.
    role = listing.decode("ascii", "replace")
    if not (len(role) <= 64 and set(role) <= _ROLE_NAME_CHARACTERS):
        raise _Unnamed("instance metadata answered the role list with something that is not a role name")
    info = _json_object(_http("GET", endpoint + "/latest/meta-data/iam/info", headers, timeout))
    profile_arn = None if info is None else info.get("InstanceProfileArn")
    if not (isinstance(profile_arn, str) and profile_arn.startswith("arn:") and profile_arn.isascii()
            and profile_arn.isprintable() and len(profile_arn) <= 2048):
        raise _Unnamed("instance metadata gave no instance profile ARN (iam/info)")
    return _digest(endpoint, role, profile_arn)


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
