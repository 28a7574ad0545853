"""Which credential source botocore's chain will use (src/ecr_kubelet/node_source.py).

Each case is checked against botocore itself: the source we predict without botocore must be the
one its default chain really resolves (`Credentials.method`), or the cache key names the wrong
identity.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecr_kubelet.models import NodeSource
from ecr_kubelet.node_source import resolve_node_source
from helpers import make_jwt
from metadata_server import CONTAINER_PATH, MetadataServer, RawServer

Setup = Callable[[Path, MetadataServer], dict[str, str]]


@pytest.fixture
def metadata() -> Iterator[MetadataServer]:
    server = MetadataServer().start()
    yield server
    server.stop()


def _file(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def env_keys(tmp: Path, _m: MetadataServer) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "AKIAENVKEY000000000", "AWS_SECRET_ACCESS_KEY": "s"}


def shared_credentials(tmp: Path, _m: MetadataServer) -> dict[str, str]:
    return {"AWS_SHARED_CREDENTIALS_FILE": _file(tmp / "credentials", "[default]\naws_access_key_id = A\n"
                                                 "aws_secret_access_key = s\n")}


def named_profile_in_config(tmp: Path, _m: MetadataServer) -> dict[str, str]:
    return {"AWS_PROFILE": "p", "AWS_CONFIG_FILE": _file(tmp / "config", "[profile p]\naws_access_key_id = A\n"
                                                         "aws_secret_access_key = s\n")}


def credential_process(tmp: Path, _m: MetadataServer) -> dict[str, str]:
    script = tmp / "creds.sh"
    script.write_text('#!/bin/sh\necho \'{"Version": 1, "AccessKeyId": "A", "SecretAccessKey": "s"}\'\n')
    script.chmod(0o700)
    return {"AWS_CONFIG_FILE": _file(tmp / "config", f"[default]\ncredential_process = {script}\n")}


def assume_role_profile(tmp: Path, _m: MetadataServer) -> dict[str, str]:
    return {
        "AWS_CONFIG_FILE": _file(tmp / "config", "[default]\nrole_arn = arn:aws:iam::123456789012:role/r\n"
                                 "source_profile = base\n[profile base]\naws_access_key_id = A\n"
                                 "aws_secret_access_key = s\n"),
    }


def web_identity_env(tmp: Path, _m: MetadataServer) -> dict[str, str]:
    return {"AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/r",
            "AWS_WEB_IDENTITY_TOKEN_FILE": _file(tmp / "token", make_jwt("system:serviceaccount:a:b"))}


def container(tmp: Path, m: MetadataServer) -> dict[str, str]:
    return {"AWS_CONTAINER_CREDENTIALS_FULL_URI": m.url + CONTAINER_PATH}


def instance_metadata(tmp: Path, m: MetadataServer) -> dict[str, str]:
    return {"AWS_EC2_METADATA_SERVICE_ENDPOINT": m.url}


def env_keys_beat_files(tmp: Path, m: MetadataServer) -> dict[str, str]:
    return {**shared_credentials(tmp, m), **env_keys(tmp, m)}


CASES: dict[str, tuple[Setup, str]] = {
    "env": (env_keys, "env"),
    "shared-credentials": (shared_credentials, "shared-credentials-file"),
    "config-file": (named_profile_in_config, "config-file"),
    "credential-process": (credential_process, "custom-process"),
    "assume-role-profile": (assume_role_profile, "assume-role"),
    "web-identity-env": (web_identity_env, "assume-role-with-web-identity"),
    "container": (container, "container-role"),
    "instance-metadata": (instance_metadata, "iam-role"),
    "env-beats-files": (env_keys_beat_files, "env"),
}

_CHAIN_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_CREDENTIAL_FILE", "BOTO_CONFIG",
)


def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    for name in _CHAIN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = {"HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"), "BOTO_CONFIG": str(tmp_path / "no-boto"),
           "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9", **extra}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.mark.parametrize("case", list(CASES))
def test_predicted_source_is_the_one_botocore_uses(
    case: str, tmp_path: Path, metadata: MetadataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, method = CASES[case]
    env = _environment(monkeypatch, tmp_path, setup(tmp_path, metadata))
    source = resolve_node_source(env)
    assert source.fingerprint is not None and source.method == method
    credentials = botocore.session.Session().get_credentials()
    assert credentials is not None and credentials.method == method


def test_no_source_when_metadata_is_disabled_and_nothing_else_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _environment(monkeypatch, tmp_path, {"AWS_EC2_METADATA_DISABLED": "true"})
    source = resolve_node_source(env)
    assert source.fingerprint is None and source.no_credentials
    assert botocore.session.Session().get_credentials() is None


def test_metadata_unreachable_means_no_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _environment(monkeypatch, tmp_path, {})  # the endpoint is a closed port on 127.0.0.1
    source = resolve_node_source(env)
    assert source.fingerprint is None and source.no_credentials


def test_an_unparsable_config_file_is_never_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _environment(monkeypatch, tmp_path, {"AWS_CONFIG_FILE": _file(tmp_path / "config", "no section\n")})
    source = resolve_node_source(env)
    assert source.fingerprint is None and not source.no_credentials and "cannot be parsed" in source.reason


def test_fingerprints_change_with_what_identifies_the_signer(
    tmp_path: Path, metadata: MetadataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fingerprint(extra: dict[str, str]) -> str:
        source = resolve_node_source(_environment(monkeypatch, tmp_path, extra))
        assert source.fingerprint is not None
        return source.fingerprint

    a = fingerprint({"AWS_ACCESS_KEY_ID": "AKIAONE", "AWS_SECRET_ACCESS_KEY": "s"})
    assert a != fingerprint({"AWS_ACCESS_KEY_ID": "AKIATWO", "AWS_SECRET_ACCESS_KEY": "s"})
    assert "AKIAONE" not in a
    # the secret key of the same key id is the same identity; nothing secret is in the name
    assert a == fingerprint({"AWS_ACCESS_KEY_ID": "AKIAONE", "AWS_SECRET_ACCESS_KEY": "other"})

    metadata.serve("role-a", "ASIAKEY1")
    imds = fingerprint(instance_metadata(tmp_path, metadata))
    metadata.serve("role-a", "ASIAKEY2")
    assert fingerprint(instance_metadata(tmp_path, metadata)) == imds  # rotated credentials, same role
    metadata.serve("role-b", "ASIAKEY2")
    assert fingerprint(instance_metadata(tmp_path, metadata)) != imds


def test_the_same_instance_role_name_in_two_accounts_is_two_identities(
    tmp_path: Path, metadata: MetadataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecr_kubelet.models import Identity

    def fingerprint() -> str | None:
        source = resolve_node_source(_environment(monkeypatch, tmp_path, instance_metadata(tmp_path, metadata)))
        return Identity(mode="node", node=source).fingerprint()

    metadata.serve("eks-node-role", "ASIAKEY1", account="111111111111")
    first = fingerprint()
    metadata.serve("eks-node-role", "ASIAKEY1", account="222222222222")
    second = fingerprint()
    assert first is not None and second is not None and first != second


def test_container_credentials_over_plain_http_go_only_to_local_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _environment(monkeypatch, tmp_path, {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://example.com/creds",
                                               "AWS_CONTAINER_AUTHORIZATION_TOKEN": "secret-token"})
    assert resolve_node_source(env).fingerprint is None  # the token is never sent there (botocore refuses too)


@pytest.mark.parametrize("variable", ["AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"])
def test_a_fifo_as_a_config_file_neither_blocks_nor_names_an_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    env = _environment(monkeypatch, tmp_path, {variable: str(fifo), "AWS_EC2_METADATA_DISABLED": "true"})
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(resolve_node_source(env)), daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))  # unblock the reader so the thread ends
        pytest.fail(f"a FIFO as {variable} blocked")
    assert len(result) == 1 and getattr(result[0], "fingerprint", "") is None


# ---- the prediction against botocore's own chain, over generated environments and files ----------------

_UNSET = None
_PROFILE_KINDS = ("static", "static-no-secret", "role-source-a", "role-source-self", "role-source-missing",
                  "role-both-sources", "role-env", "role-imds", "role-container", "process", "sso", "sso-partial",
                  "web", "empty", "sso-session", "login", "bad-timeout", "ipv6-mode")
_CREDS_KINDS = ("static", "static-no-secret", "empty", "role-source-b")
_PROFILE_NAMES = ("default", "a", "b")
# Unset most often: a value for both profile variables is mostly a profile missing from the files.
_PROFILE_VALUES = (_UNSET, _UNSET, _UNSET, _UNSET, "", "default", "a", "b", "missing")


class World:
    """One generated set of files and two metadata servers (the same role name in two accounts)."""

    def __init__(self, root: Path, imds: tuple[MetadataServer, MetadataServer], config: dict[str, str] | None,
                 creds: dict[str, str] | None, profile_default_section: bool, boto: bool) -> None:
        self.root, self.imds = root, imds
        (root / ".aws").mkdir()
        for sub in ("one", "two"):
            _file(root / f"token-{sub}", make_jwt(f"system:serviceaccount:ns:{sub}"))
        if config is not None:
            sections = []
            for name, kind in config.items():
                header = f"profile {name}" if name != "default" or profile_default_section else "default"
                sections.append(f"[{header}]\n{self._body(name, kind)}")
            sections.append("[sso-session s]\nsso_start_url = https://example.awsapps.com/start\n"
                            "sso_region = us-east-1\n")
            _file(root / ".aws" / "config", "\n".join(sections))
        if creds is not None:
            _file(root / ".aws" / "credentials",
                  "\n".join(f"[{name}]\n{self._body(name, kind)}" for name, kind in creds.items()))
        _file(root / "boto", "[Credentials]\naws_access_key_id = AKIABOTO\naws_secret_access_key = s\n"
              if boto else "[Boto]\ndebug = 0\n")

    def _body(self, name: str, kind: str) -> str:
        role = f"role_arn = arn:aws:iam::123456789012:role/r-{name}\n"
        static = f"aws_access_key_id = AKIAFILE{name.upper()}\naws_secret_access_key = s\n"
        if kind == "process":
            script = self.root / f"process-{name}.sh"
            script.write_text("#!/bin/sh\necho '{\"Version\": 1, \"AccessKeyId\": \"AKIAPROC" + name.upper()
                              + "\", \"SecretAccessKey\": \"s\"}'\n")
            script.chmod(0o700)
        return {
            "static": static,
            "static-no-secret": f"aws_access_key_id = AKIAHALF{name.upper()}\n",
            "role-source-a": role + "source_profile = a\n",
            "role-source-b": role + "source_profile = b\n",
            "role-source-self": role + f"source_profile = {name}\n" + static,
            "role-source-missing": role + "source_profile = nowhere\n",
            "role-both-sources": role + "source_profile = a\ncredential_source = Environment\n",
            "role-env": role + "credential_source = Environment\n",
            "role-imds": role + "credential_source = Ec2InstanceMetadata\n",
            "role-container": role + "credential_source = EcsContainer\n",
            "process": f"credential_process = {self.root}/process-{name}.sh\n",
            "sso": "sso_start_url = https://example.awsapps.com/start\nsso_region = us-east-1\n"
                   f"sso_account_id = 123456789012\nsso_role_name = r-{name}\n",
            "sso-partial": "sso_account_id = 123456789012\n",
            "web": role + f"web_identity_token_file = {self.root}/token-one\n",
            "empty": "region = us-east-1\n",
            "sso-session": f"sso_session = s\nsso_account_id = 123456789012\nsso_role_name = r-{name}\n",
            "login": "login_session = arn:aws:iam::123456789012:user/u\n",
            "bad-timeout": "metadata_service_timeout = soon\n" + static,
            "ipv6-mode": "ec2_metadata_service_endpoint_mode = ipv6\n",
        }[kind]

    def environment(self, choices: dict[str, str | None]) -> dict[str, str]:
        """The process environment for one generated set of choices (placeholders become paths)."""
        root = str(self.root)
        places = {"@config": f"{root}/.aws/config", "@credentials": f"{root}/.aws/credentials",
                  "@missing": f"{root}/missing", "@token-one": f"{root}/token-one", "@token-two": f"{root}/token-two",
                  "@imds-a": self.imds[0].url, "@imds-b": self.imds[1].url, "@closed": "http://127.0.0.1:9",
                  "@imds-a/": self.imds[0].url + "/",
                  "@container-a": self.imds[0].url + CONTAINER_PATH, "@container-b": self.imds[1].url + CONTAINER_PATH,
                  "@boto": f"{root}/boto"}
        env = {"HOME": root, "PATH": os.environ.get("PATH", ""), "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "1"}
        for name, value in choices.items():
            if value is not None:
                env[name] = places.get(value, value)
        return env


def _choice(*values: str | None) -> st.SearchStrategy[str | None]:
    return st.sampled_from(values)


_ENVIRONMENTS = st.fixed_dictionaries({
    "AWS_PROFILE": st.sampled_from(_PROFILE_VALUES),
    "AWS_DEFAULT_PROFILE": st.sampled_from(_PROFILE_VALUES),
    "AWS_ACCESS_KEY_ID": _choice(_UNSET, _UNSET, _UNSET, "", "AKIAENVONE", "AKIAENVTWO"),
    "AWS_SECRET_ACCESS_KEY": _choice(_UNSET, "", "s", "s"),
    "AWS_SESSION_TOKEN": _choice(_UNSET, "session"),
    "AWS_CONFIG_FILE": _choice(_UNSET, "@config", "", "@missing"),
    "AWS_SHARED_CREDENTIALS_FILE": _choice(_UNSET, "@credentials", "", "@missing"),
    "AWS_WEB_IDENTITY_TOKEN_FILE": _choice(_UNSET, _UNSET, _UNSET, "", "@token-one", "@token-two", "@missing"),
    "AWS_ROLE_ARN": _choice(_UNSET, "", "arn:aws:iam::123456789012:role/web-1", "arn:aws:iam::123456789012:role/web-2"),
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": _choice(_UNSET, _UNSET, "@container-a", "@container-b", ""),
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": _choice(_UNSET, "token", "bad\nheader"),
    "AWS_EC2_METADATA_DISABLED": _choice(_UNSET, "true", "TRUE", "false", ""),
    # never unset or empty: botocore would ask the real 169.254.169.254
    "AWS_EC2_METADATA_SERVICE_ENDPOINT": _choice("@imds-a", "@imds-b", "@imds-a/", "@closed", "not a url"),
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": _choice(_UNSET, _UNSET, _UNSET, "ipv4", "IPv6", "bogus"),
    "AWS_IMDS_USE_IPV6": _choice(_UNSET, "true"),
    "AWS_METADATA_SERVICE_TIMEOUT": _choice("1", "1", "1", "1.5", "", "x"),
    "BOTO_CONFIG": _choice("@missing", "@boto"),
})
_FILES = st.fixed_dictionaries({
    "config": st.none() | st.dictionaries(st.sampled_from(_PROFILE_NAMES), st.sampled_from(_PROFILE_KINDS)),
    "creds": st.none() | st.dictionaries(st.sampled_from(_PROFILE_NAMES), st.sampled_from(_CREDS_KINDS)),
    "profile_default_section": st.booleans(),
    "boto": st.booleans(),
})


def _what_botocore_resolves(credentials: Any) -> tuple[object, ...]:
    """What identifies the credentials botocore's chain resolved, without calling AWS: the access key
    of resolved credentials, or for deferred ones (assumed roles, web identity, SSO) what they will be
    fetched with (botocore's own fetcher)."""
    from botocore.credentials import DeferredRefreshableCredentials

    method = getattr(credentials, "method", None)
    if isinstance(credentials, DeferredRefreshableCredentials):
        refresh = getattr(credentials, "_refresh_using", None)
        fetcher: Any = getattr(refresh, "__self__", None)
        if method == "assume-role":
            return (method, fetcher._role_arn, _what_botocore_resolves(fetcher._source_credentials))
        if method == "assume-role-with-web-identity":
            token_path = fetcher._web_identity_token_loader._web_identity_token_path
            token = Path(token_path).read_text() if Path(token_path).is_file() else None
            return (method, fetcher._role_arn, token)
        if method == "sso":
            return (method, fetcher._start_url, fetcher._account_id, fetcher._role_name)
        return (method, "unknown deferred")
    return (method, credentials.get_frozen_credentials().access_key)


def _botocore_resolves(env: dict[str, str]) -> tuple[object, ...]:
    from unittest import mock

    with mock.patch.dict(os.environ, env, clear=True):
        try:
            credentials = botocore.session.Session().get_credentials()
        except Exception as exc:
            return ("error", type(exc).__name__)
        if credentials is None:
            return ("none",)
        try:
            return _what_botocore_resolves(credentials)
        except Exception as exc:
            return ("error", type(exc).__name__)


def _predict(env: dict[str, str]) -> NodeSource:
    from unittest import mock

    with mock.patch.dict(os.environ, env, clear=True):  # `~` is the generated HOME
        return resolve_node_source(env)


@pytest.fixture(scope="module")
def two_accounts() -> Iterator[tuple[MetadataServer, MetadataServer]]:
    a, b = MetadataServer().start(), MetadataServer().start()
    a.serve("node-role", "ASIAACCOUNTA", "arn:aws:iam::111111111111:role/task", account="111111111111")
    b.serve("node-role", "ASIAACCOUNTB", "arn:aws:iam::222222222222:role/task", account="222222222222")
    yield a, b
    a.stop()
    b.stop()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=_FILES, choices=st.lists(_ENVIRONMENTS, min_size=2, max_size=3))
def test_a_named_identity_is_exactly_what_botocore_resolves(
    two_accounts: tuple[MetadataServer, MetadataServer], files: dict[str, Any], choices: list[dict[str, str | None]]
) -> None:
    with tempfile.TemporaryDirectory() as root:
        world = World(Path(root), two_accounts, **files)
        seen: dict[str, tuple[dict[str, str], object]] = {}
        for env in (world.environment(choice) for choice in choices):
            source, resolved = _predict(env), _botocore_resolves(env)
            assert not source.reason.startswith("naming the node identity failed"), source.reason  # a defect
            if source.no_credentials:
                assert resolved == ("none",), (env, source)
            if source.fingerprint is None:
                continue
            assert isinstance(resolved, tuple) and resolved[0] == source.method, (env, source, resolved)
            if source.fingerprint in seen:
                other_env, other = seen[source.fingerprint]
                assert other == resolved, (other_env, env, source)  # one name, one identity
            seen[source.fingerprint] = (env, resolved)


@pytest.mark.parametrize("default_profile", ["b", ""])
def test_aws_default_profile_wins_over_aws_profile_as_in_botocore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_profile: str
) -> None:
    credentials = _file(tmp_path / "credentials", "".join(
        f"[{name}]\naws_access_key_id = AKIA{name.upper()}\naws_secret_access_key = s\n"
        for name in ("default", "a", "b")))
    as_a = _environment(monkeypatch, tmp_path, {"AWS_SHARED_CREDENTIALS_FILE": credentials, "AWS_PROFILE": "a"})
    a = resolve_node_source(as_a)
    both = _environment(monkeypatch, tmp_path, {"AWS_SHARED_CREDENTIALS_FILE": credentials, "AWS_PROFILE": "a",
                                                "AWS_DEFAULT_PROFILE": default_profile})
    signer = botocore.session.Session()
    resolved = _botocore_resolves(both)
    mixed = resolve_node_source(both)
    assert a.fingerprint is not None and mixed.fingerprint != a.fingerprint  # never a's cache entry
    if default_profile:
        assert resolved == ("shared-credentials-file", "AKIAB") and mixed.method == "shared-credentials-file"
        assert signer.get_config_variable("profile") == "b"
    else:  # set but empty counts as set: a profile named "" does not exist
        assert resolved[0] == "error" and mixed.fingerprint is None and "''" in mixed.reason


# ---- odd instance metadata: the naming ends in a name, "not cacheable" or "no credentials", never an error -------

def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


_BODIES = st.one_of(
    st.sampled_from([b"", b"   ", b"\n", b" \r\n\t", b"node-role", b"node-role\n", b"a\nb", b"r\xe9le", b"\xff\xfe",
                     b"x" * 65, b"x" * 100_000, b"{}", b'{"InstanceProfileArn": 7}',
                     b'{"InstanceProfileArn": "arn:aws:iam::111111111111:instance-profile/p"}']),
    st.binary(max_size=300),
    st.text(max_size=80).map(str.encode),
)
_ANSWERS = st.one_of(
    _BODIES.map(_ok),
    st.binary(max_size=200),  # not HTTP at all
    st.sampled_from([b"", b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
                     b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort",
                     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                     b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"]),
)


@pytest.fixture(scope="module")
def path_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=_ANSWERS, listing=_ANSWERS, info=_ANSWERS)
def test_any_metadata_answer_gives_a_name_not_cacheable_or_no_credentials(
    path_server: RawServer, token: bytes, listing: bytes, info: bytes
) -> None:
    from ecr_kubelet import metadata, node_source

    path_server.answers = {"/latest/api/token": token, "/latest/meta-data/iam/security-credentials/": listing,
                           "/latest/meta-data/iam/info": info}
    env = {"HOME": "/nonexistent", "AWS_CONFIG_FILE": "", "AWS_SHARED_CREDENTIALS_FILE": "", "BOTO_CONFIG": "",
           "AWS_EC2_METADATA_SERVICE_ENDPOINT": path_server.url,
           "AWS_METADATA_SERVICE_TIMEOUT": "5"}  # the longest it takes: a loaded machine must not cut a body short
    # the naming itself: a name, "no credentials" or "not cacheable", never an exception
    chain = node_source._Chain(env)
    try:
        name: str | None = chain._instance_metadata()
    except (metadata.Unnamed, metadata.NoCredentials):
        name = None
    source = resolve_node_source(env)
    assert not source.reason.startswith("naming the node identity failed"), source.reason  # a defect
    assert (source.fingerprint is None) == (name is None)
    if source.no_credentials:  # only when no role came: a whole 200 answer with a body is a role list
        assert not any(listing == _ok(body) for body in (listing.partition(b"\r\n\r\n")[2],) if body)
    elif source.fingerprint is not None:
        assert source.method == "iam-role"


def test_white_space_for_the_role_list_is_not_cacheable(path_server: RawServer) -> None:
    path_server.answers = {"/latest/meta-data/iam/security-credentials/": _ok(b"  \n")}
    source = resolve_node_source({"HOME": "/nonexistent", "AWS_CONFIG_FILE": "", "AWS_SHARED_CREDENTIALS_FILE": "",
                                  "BOTO_CONFIG": "", "AWS_EC2_METADATA_SERVICE_ENDPOINT": path_server.url})
    assert source.fingerprint is None and not source.no_credentials and "role name" in source.reason


def test_metadata_that_never_answers_ends_at_the_timeout_as_no_credentials() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:  # connections are queued, never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        source = resolve_node_source({"HOME": "/nonexistent", "AWS_CONFIG_FILE": "", "AWS_SHARED_CREDENTIALS_FILE": "",
                                      "BOTO_CONFIG": "", "AWS_EC2_METADATA_SERVICE_ENDPOINT": url,
                                      "AWS_METADATA_SERVICE_TIMEOUT": "1"})
    assert source.fingerprint is None and source.no_credentials


def test_metadata_past_the_deadline_is_not_cacheable_and_not_asked(metadata: MetadataServer) -> None:
    """Out of time is not "no credentials": botocore decides, and nothing waits for the endpoint."""
    from ecr_kubelet.deadline import Deadline

    env = {"HOME": "/nonexistent", "AWS_CONFIG_FILE": "", "AWS_SHARED_CREDENTIALS_FILE": "", "BOTO_CONFIG": "",
           "AWS_EC2_METADATA_SERVICE_ENDPOINT": metadata.url}
    before = len(metadata.requests)
    source = resolve_node_source(env, Deadline(0.0))
    assert source.fingerprint is None and not source.no_credentials and len(metadata.requests) == before
    assert resolve_node_source(env, Deadline(30.0)).method == "iam-role"
