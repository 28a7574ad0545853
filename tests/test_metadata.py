"""The node-local metadata endpoints (src/ecr_kubelet/metadata.py): the plain-socket exchange against
http.client on the same bytes, and every wait bounded by the run's deadline."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from ecr_kubelet import metadata
from ecr_kubelet.deadline import Deadline
from helpers import RunProvider, make_request
from metadata_server import MetadataServer, RawServer


@pytest.fixture
def metadata_server() -> Iterator[MetadataServer]:
    server = MetadataServer().start()
    yield server
    server.stop()


# ---- the metadata HTTP exchange: the plain-socket path against http.client ---------------------------

def both(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[object, object]:
    return (metadata.plain_http(method, url, headers or {}, 2.0),
            metadata.http_client(method, url, headers or {}, 2.0))


def test_plain_http_agrees_with_http_client_on_instance_metadata(metadata_server: MetadataServer) -> None:
    token, token_client = both("PUT", metadata_server.url + "/latest/api/token",
                               {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    assert isinstance(token, bytes) and token and isinstance(token_client, bytes)
    headers = {"X-aws-ec2-metadata-token": token.decode()}
    listing = both("GET", metadata_server.url + "/latest/meta-data/iam/security-credentials/", headers)
    assert listing[0] == listing[1] == metadata_server.role.encode()
    assert both("GET", metadata_server.url + "/no/such/path", headers) == (None, None)


@pytest.mark.parametrize(("answer", "plain"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nrole1", b"role1"),
    (b"HTTP/1.0 200 OK\r\n\r\nrole2", b"role2"),  # no length: up to the end
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!", None),
    # cut short: no answer, where http.client's read(amt) returns the part it got
    (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", "cut"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nrole3\r\n0\r\n\r\n", "unsure"),
    (b"garbage", "unsure"),
    # larger than plain_http reads: not "no answer" (botocore reads it all), so http.client decides
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000, "unsure"),
])
def test_plain_http_answers_as_http_client_or_leaves_it_to_it(answer: bytes, plain: object) -> None:
    server = RawServer(answer)
    try:
        ours, theirs = both("GET", server.url + "/x")
        expected = {"unsure": metadata.UNSURE, "cut": None}.get(plain, plain)  # type: ignore[call-overload]
        assert ours == expected
        if plain not in ("unsure", "cut"):
            assert ours == theirs  # what http.client makes of the same bytes
        assert metadata.http("GET", server.url + "/x", {}, 2.0) == (theirs if plain == "unsure" else expected)
        assert server.requests[0].startswith(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:")
    finally:
        server.close()


def test_plain_http_reads_no_further_than_the_body_when_the_server_keeps_the_connection() -> None:
    server = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", keep_open=True)
    try:
        # Waiting for the server to close would end at the timeout with no answer.
        assert metadata.plain_http("GET", server.url + "/x", {}, 5.0) == b"{}"
    finally:
        server.close()


def test_plain_http_never_sends_a_header_that_could_split_the_request() -> None:
    server = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    try:
        answer = metadata.plain_http("GET", server.url + "/x", {"X-Token": "a\r\nX-Evil: 1"}, 2.0)
        assert answer is metadata.UNSURE and server.requests == []
    finally:
        server.close()


def test_plain_http_takes_only_ip_literal_http_endpoints() -> None:
    for url in ("https://127.0.0.1/x", "http://localhost:9/x", "http://[::1/x", "http://127.0.0.1:99999/x",
                "http://127.0.0.1:9/\u00e9", "http://127.0.0.1:9/a b"):
        assert metadata.plain_http("GET", url, {}, 0.5) is metadata.UNSURE, url
    assert metadata.plain_http("GET", "http://127.0.0.1:9/x", {}, 0.5) is None  # nothing listens there


@pytest.mark.parametrize(("endpoint", "plain"), [
    ("http://127.0.0.1:9", True), ("http://127.0.0.1:9/", True), ("http://[fd00:ec2::254]", True),
    ("https://imds.example:443", True), ("not a url", False), ("http://", False), ("http://x/y", False),
    ("http://x?y", False), ("ftp://x", False), ("http://u@x", False), ("http://x:0", False),
    ("http://x:99999", False), ("http://[::1", False), ("http://[::1]x", False), ("http://\u00e9", False),
])
def test_only_a_plain_metadata_endpoint_is_followed(endpoint: str, plain: bool) -> None:
    assert metadata.plain_endpoint(endpoint) is plain




# ---- the deadline ------------------------------------------------------------------------------------


class Steps:
    """A deadline's clock that reads `start` for the first `fresh` readings and `end` after them."""

    def __init__(self, fresh: int, start: float = 0.0, end: float = 1000.0) -> None:
        self.readings = 0
        self.fresh, self.start, self.end = fresh, start, end

    def __call__(self) -> float:
        self.readings += 1
        return self.start if self.readings <= self.fresh else self.end


def deadline(seconds: float, fresh: int) -> Deadline:
    """A deadline of `seconds` whose time runs out after `fresh` readings of what remains."""
    return Deadline(seconds, clock=Steps(fresh + 1))  # one reading is the deadline's own start


def test_a_wait_is_the_lesser_of_its_timeout_and_what_remains() -> None:
    assert metadata.bounded(2.0, None) == 2.0
    assert metadata.bounded(2.0, Deadline(30.0, clock=lambda: 0.0)) == 2.0
    assert 0 < metadata.bounded(2.0, Deadline(1.0, clock=lambda: 0.0)) < 1.0
    with pytest.raises(metadata.OutOfTime):
        metadata.bounded(2.0, deadline(30.0, fresh=0))


class SilentServer:
    """Accepts connections and reads the requests, never answers: only a timeout ends a wait for it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            self.requests += 1

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_no_request_starts_once_the_deadline_has_passed(silent: SilentServer) -> None:
    for url in (f"http://127.0.0.1:{silent.port}/x", f"http://localhost:{silent.port}/x"):  # both clients
        with pytest.raises(metadata.OutOfTime):
            metadata.http("GET", url, {}, 30.0, deadline(30.0, fresh=0))
    assert silent.requests == 0


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/x", "http://localhost:{port}/x"],
                         ids=["plain socket", "http.client"])
@pytest.mark.parametrize("fresh", [2, 3], ids=["gone once connected", "gone once sent"])
def test_a_deadline_that_passes_mid_exchange_ends_it_at_once(silent: SilentServer, url: str, fresh: int) -> None:
    """The server never answers and each wait would allow 30 s: the deadline, gone after the connection is
    made or the request sent, ends the exchange with no answer at the next wait instead."""
    import time

    started = time.monotonic()
    assert metadata.http("GET", url.format(port=silent.port), {}, 30.0, deadline(30.0, fresh)) is None
    assert time.monotonic() - started < 20  # a bound far below the 30 s a wait of its own would take


def test_instance_metadata_past_the_deadline_names_nothing_and_asks_nothing(
    metadata_server: MetadataServer
) -> None:
    before = len(metadata_server.requests)
    with pytest.raises(metadata.OutOfTime):
        metadata.instance_identity({}, metadata_server.url, deadline(30.0, fresh=0))
    assert len(metadata_server.requests) == before
    role, profile_arn = metadata.instance_identity({}, metadata_server.url, Deadline(30.0))
    assert role == metadata_server.role and profile_arn.startswith("arn:aws:iam::")


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/x", "http://localhost:{port}/x"],
                         ids=["plain socket", "http.client"])
def test_a_deadline_that_passes_while_the_body_stalls_ends_the_read(url: str) -> None:
    """The head and part of the body came, the rest never does: the deadline, gone by then, ends the read."""
    import time

    server = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", keep_open=True)
    port = server.url.rsplit(":", 1)[1]
    try:
        started = time.monotonic()
        assert metadata.http("GET", url.format(port=port), {}, 30.0, deadline(30.0, fresh=4)) is None
        assert time.monotonic() - started < 20  # a bound far below the 30 s a read of its own would take
    finally:
        server.close()


def test_a_kubelet_run_asks_a_silent_metadata_service_within_its_own_deadline(
    silent: SilentServer, run_provider: RunProvider, provider_env: dict[str, str]
) -> None:
    # The node identity is named before any AWS call (the cache key): its metadata requests, each allowed 5 s
    # and several in a row, must still end by the run's deadline, then the run fails with its one line.
    import time

    env = {k: v for k, v in provider_env.items()
           if not k.startswith("AWS_ACCESS") and k not in ("AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED")}
    env.update(AWS_EC2_METADATA_SERVICE_ENDPOINT=f"http://127.0.0.1:{silent.port}", AWS_METADATA_SERVICE_TIMEOUT="5",
               AWS_METADATA_SERVICE_NUM_ATTEMPTS="1")
    started = time.monotonic()
    result = run_provider(make_request("123456789012.dkr.ecr.us-east-1.amazonaws.com/app"), "--timeout", "3s",
                          env=env)
    took = time.monotonic() - started
    assert result.returncode in (3, 4) and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert took < 3 + 5  # not the prediction's own 5 s per request on top of the deadline
