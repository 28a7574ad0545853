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
node-local metadata endpoints, never to AWS, within the run's deadline (metadata.py).
"""

from __future__ import annotations

import os

from ecr_kubelet import jsoncodec, metadata
from ecr_kubelet.hashing import sha256
from ecr_kubelet.metadata import NoCredentials as _NoCredentials
from ecr_kubelet.metadata import Unnamed as _Unnamed
from ecr_kubelet.models import NodeSource

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from ecr_kubelet.deadline import Deadline

_CONTAINER_HOST = "http://169.254.170.2"
_IMDS_IPV4 = "http://169.254.169.254"
_IMDS_IPV6 = "http://[fd00:ec2::254]"
_SSO_PROFILE_KEYS = ("sso_role_name", "sso_account_id")
_SSO_REQUIRED_KEYS = ("sso_role_name", "sso_account_id", "sso_start_url", "sso_region")


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


def resolve_node_source(env: Mapping[str, str], deadline: Deadline | None = None) -> NodeSource:
    """The source botocore's default chain will use, or why it cannot be told (then: no cache). The
    metadata endpoints, when the chain reaches them, are asked within `deadline` (metadata.py).

    Never raises: anything unexpected while naming the identity only makes it "not cacheable"."""
    try:
        return _Chain(env, deadline).resolve()
    except _NoCredentials:
        return NodeSource.unnamed("the default credential chain finds no credentials", no_credentials=True)
    except _Unnamed as exc:
        return NodeSource.unnamed(str(exc))
    except Exception as exc:  # a defect here must cost the cache, never the pull
        return NodeSource.unnamed(f"naming the node identity failed ({type(exc).__name__})")


class _Chain:
    """botocore's default chain for one environment, as far as naming the identity needs it."""

    def __init__(self, env: Mapping[str, str], deadline: Deadline | None = None) -> None:
        self.env = env
        self.deadline = deadline
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
        if not metadata.plain_endpoint(endpoint):
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
        return _container(self.env, self.deadline)

    def _instance_metadata(self) -> str:
        """The instance profile's role and ARN (metadata.instance_identity) with the endpoint asked."""
        role, profile_arn = metadata.instance_identity(self.env, self.imds_endpoint, self.deadline)
        return _digest(self.imds_endpoint.rstrip("/"), role, profile_arn)


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


def _container(env: Mapping[str, str], deadline: Deadline | None) -> str:
    """The container credentials endpoint and the role it serves, as botocore's ContainerProvider finds
    them (its rules for the URL and the authorization token)."""
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
        if not (parts.scheme == "https" or (parts.scheme == "http" and metadata.local_host(parts.hostname))):
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
    body = metadata.http("GET", url, headers, metadata.metadata_timeout(env), deadline)
    document = metadata.json_object(body)
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
