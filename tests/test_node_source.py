"""Which credential source botocore's chain will use (src/ecr_kubelet/node_source.py).

Each case is checked against botocore itself: the source we predict without botocore must be the
one its default chain really resolves (`Credentials.method`), or the cache key names the wrong
identity.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import botocore.session
import pytest

from ecr_kubelet.node_source import resolve_node_source
from helpers import make_jwt
from metadata_server import CONTAINER_PATH, MetadataServer

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


# ---- the metadata HTTP exchange: the plain-socket path against http.client ---------------------------

class RawServer:
    """Answers every connection with the same raw bytes, whatever it was asked, then closes it (or, with
    `keep_open`, waits for the client to close it first, as a server that ignores `Connection: close`)."""

    def __init__(self, answer: bytes, keep_open: bool = False) -> None:
        import socket

        self.answer = answer
        self.keep_open = keep_open
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                connection.sendall(self.answer)
                while self.keep_open and connection.recv(4096):
                    pass

    def close(self) -> None:
        self.listener.close()


def both(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[object, object]:
    from ecr_kubelet import node_source

    return (node_source._plain_http(method, url, headers or {}, 2.0),
            node_source._http_client(method, url, headers or {}, 2.0))


def test_plain_http_agrees_with_http_client_on_instance_metadata(metadata: MetadataServer) -> None:
    token, token_client = both("PUT", metadata.url + "/latest/api/token",
                               {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    assert isinstance(token, bytes) and token and isinstance(token_client, bytes)
    headers = {"X-aws-ec2-metadata-token": token.decode()}
    listing = both("GET", metadata.url + "/latest/meta-data/iam/security-credentials/", headers)
    assert listing[0] == listing[1] == metadata.role.encode()
    assert both("GET", metadata.url + "/no/such/path", headers) == (None, None)


@pytest.mark.parametrize(("answer", "plain"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nrole1", b"role1"),
    (b"HTTP/1.0 200 OK\r\n\r\nrole2", b"role2"),  # no length: up to the end
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!", None),
    # cut short: no answer, where http.client's read(amt) returns the part it got
    (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", "cut"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nrole3\r\n0\r\n\r\n", "unsure"),
    (b"garbage", "unsure"),
])
def test_plain_http_answers_as_http_client_or_leaves_it_to_it(answer: bytes, plain: object) -> None:
    from ecr_kubelet import node_source

    server = RawServer(answer)
    try:
        ours, theirs = both("GET", server.url + "/x")
        expected = {"unsure": node_source._UNSURE, "cut": None}.get(plain, plain)  # type: ignore[call-overload]
        assert ours == expected
        if plain not in ("unsure", "cut"):
            assert ours == theirs  # what http.client makes of the same bytes
        assert node_source._http("GET", server.url + "/x", {}, 2.0) == (theirs if plain == "unsure" else expected)
        assert server.requests[0].startswith(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:")
    finally:
        server.close()


def test_plain_http_reads_no_further_than_the_body_when_the_server_keeps_the_connection() -> None:
    from ecr_kubelet import node_source

    server = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", keep_open=True)
    try:
        # Waiting for the server to close would end at the timeout with no answer.
        assert node_source._plain_http("GET", server.url + "/x", {}, 5.0) == b"{}"
    finally:
        server.close()


def test_plain_http_never_sends_a_header_that_could_split_the_request() -> None:
    from ecr_kubelet import node_source

    server = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    try:
        answer = node_source._plain_http("GET", server.url + "/x", {"X-Token": "a\r\nX-Evil: 1"}, 2.0)
        assert answer is node_source._UNSURE and server.requests == []
    finally:
        server.close()


def test_plain_http_takes_only_ip_literal_http_endpoints() -> None:
    from ecr_kubelet import node_source

    for url in ("https://127.0.0.1/x", "http://localhost:9/x", "http://[::1/x", "http://127.0.0.1:99999/x",
                "http://127.0.0.1:9/\u00e9", "http://127.0.0.1:9/a b"):
        assert node_source._plain_http("GET", url, {}, 0.5) is node_source._UNSURE, url
    assert node_source._plain_http("GET", "http://127.0.0.1:9/x", {}, 0.5) is None  # nothing listens there
