"""A local origin server standing in for a host on the internet: plain HTTP or HTTPS, on a loopback address.

``GET /hello`` answers ``hello <Host header>``; ``GET /bytes/<n>`` answers n bytes; ``GET /hold`` answers its
head and then keeps the connection open until the client goes. ``accepted`` counts TCP connections, so a test
can show that a refused attempt never reached it.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from toolrunner.egress import ConnectionRecord, MemorySink

_BLOCK = b"x" * (256 * 1024)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        if self.path.startswith("/bytes/"):
            n = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            while n > 0:
                chunk = _BLOCK[: min(n, len(_BLOCK))]
                self.wfile.write(chunk)
                n -= len(chunk)
            return
        if self.path == "/hold":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.flush()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.rfile.read(1):
                pass
            return
        body = f"hello {self.headers.get('Host', '')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)


class Origin:
    """``Origin(host, tls=ctx)``: serving from construction until ``close()``; ``port`` and ``accepted``."""

    def __init__(self, host: str = "127.0.0.2", tls: ssl.SSLContext | None = None) -> None:
        origin = self
        self.accepted = 0

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                """A client (or relay) that resets its connection is normal here; anything else is printed."""
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)  # type: ignore[arg-type]

            def get_request(self) -> tuple[socket.socket, object]:
                sock, addr = super().get_request()
                origin.accepted += 1
                if tls is not None:
                    sock = tls.wrap_socket(sock, server_side=True)
                return sock, addr

        self.server = Server((host, 0), _Handler)
        self.host, self.port = host, self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1") -> Iterator[int]:
    """Serve ``handler`` on ``host`` from a daemon thread for the ``with`` block; yields the port."""
    server = ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def wait_records(sink: MemorySink, n: int, timeout: float = 10.0) -> list[ConnectionRecord]:
    """The sink's records once there are ``n`` (a proxy records a connection when it closes), or what there
    is after ``timeout`` seconds: the caller's assertion says what was missing."""
    deadline = time.monotonic() + timeout
    while len(sink.records) < n and time.monotonic() < deadline:
        time.sleep(0.01)  # poll interval against the deadline
    return sink.records
