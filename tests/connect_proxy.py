"""An HTTPS (CONNECT) proxy that maps registry names to ports on 127.0.0.1, for real clients in tests.

Registry clients (crane, skopeo, docker) must talk to a registry named like ECR
(`123456789012.dkr.ecr.us-east-1.amazonaws.com`) for the credential helper to be asked at all, and TLS
must be checked against that name. We control no DNS, and /etc/hosts is global state, so the clients
get `HTTPS_PROXY` pointing here: they never resolve the name, send `CONNECT name:443`, and we splice
the connection to the registry on loopback. Anything not in the map gets 403, so no traffic can leave
the machine. A route may also terminate TLS itself (with a test certificate) in front of a plain-HTTP
server, the AWS stub, for clients that cannot be pointed at another endpoint (the benchmark's Debian
docker-credential-ecr-login). Hand-written because it is this small: the proxy libraries on PyPI (proxy.py, mitmproxy)
need plugins to rewrite a CONNECT destination and bring far more than a 60-line splice.
"""

from __future__ import annotations

import io
import select
import socket
import socketserver
import ssl
import threading


class ConnectProxy:
    """`start()`; `url` for HTTPS_PROXY; `requested` lists every CONNECT target seen; `stop()`."""

    def __init__(self, routes: dict[str, int], tls_routes: dict[str, tuple[int, ssl.SSLContext]] | None = None
                 ) -> None:
        self.routes = {name.lower(): port for name, port in routes.items()}
        self.tls_routes = {name.lower(): route for name, route in (tls_routes or {}).items()}
        self.requested: list[str] = []
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ConnectProxy:
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.connection, self.rfile)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="connect-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, client: socket.socket, rfile: io.BufferedIOBase) -> None:
        # Clients wait for our 200 before they start TLS, so the buffered reader holds nothing more.
        request_line = rfile.readline(8192).decode("latin-1").split()
        while rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass  # headers: nothing in them matters here
        target = request_line[1] if len(request_line) == 3 and request_line[0] == "CONNECT" else ""
        host, _, port = target.rpartition(":")
        with self._lock:
            self.requested.append(target)
        name = host.lower() if port == "443" else ""
        backend, tls = (self.routes[name], None) if name in self.routes else self.tls_routes.get(name, (None, None))
        if backend is None:
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        with socket.create_connection(("127.0.0.1", backend), timeout=10) as upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            _splice(tls.wrap_socket(client, server_side=True) if tls else client, upstream)


def _splice(a: socket.socket, b: socket.socket) -> None:
    peers = {a: b, b: a}
    while True:
        # A TLS socket may hold decrypted bytes that select() cannot see.
        pending = [s for s in peers if isinstance(s, ssl.SSLSocket) and s.pending()]
        readable = pending or select.select(list(peers), [], [], 30)[0]
        if not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            peers[sock].sendall(data)
