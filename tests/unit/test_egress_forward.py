"""The sandbox's forwarder (toolrunner/runner/egress_forward.py) on its own, on the host: bytes both ways by
splice, a half-close passed on, a missing proxy socket answered with 502, a reset upstream ends the tunnel, and
no thread per connection (threads would spend the tenant's pids limit)."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from toolrunner.runner.egress_forward import start_if_mounted

pytestmark = pytest.mark.timeout(60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(1 << 16):
        chunks.append(data)
    return b"".join(chunks)


class Upstream:
    """A Unix-socket server standing in for the host's proxy; ``handler`` serves each connection on a thread."""

    def __init__(self, path: Path, handler: Callable[[socket.socket], None]) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(64)
        self.handler = handler
        threading.Thread(target=self._accept, name="fake-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="fake-proxy", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            self.handler(conn)


def _digest_then_payload(payload: bytes) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        received = _recv_all(conn)  # the client's half-close must reach us as end of stream
        conn.sendall(hashlib.sha256(received).digest() + payload)
    return handler


@pytest.fixture
def forwarder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    sock_path = tmp_path / "proxy.sock"
    upstream = Upstream(sock_path, _digest_then_payload(os.urandom(5 << 20)))
    port = _free_port()
    thread = start_if_mounted(str(sock_path), f"127.0.0.1:{port}")
    assert thread is not None
    yield sock_path, port
    upstream.listener.close()


def test_bytes_go_both_ways_and_a_half_close_is_passed_on(forwarder: tuple[Path, int]) -> None:
    """3 MiB up, then the client's end of stream; the upstream's digest of what it got and 5 MiB back."""
    _, port = forwarder
    sent = os.urandom(3 << 20)
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(sent)
        client.shutdown(socket.SHUT_WR)
        answer = _recv_all(client)
    assert answer[:32] == hashlib.sha256(sent).digest()
    assert len(answer) == 32 + (5 << 20)


def test_many_tunnels_at_once_use_no_thread_each(forwarder: tuple[Path, int]) -> None:
    """Twenty tunnels open together all complete, and no forwarder thread is started for them."""
    _, port = forwarder

    def forwarder_threads() -> int:  # the fake proxy's handler threads are the test's own: not counted
        return sum(t.name != "fake-proxy" for t in threading.enumerate())

    before = forwarder_threads()
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    try:
        for i, client in enumerate(clients):
            client.sendall(struct.pack("!I", i))
        assert forwarder_threads() == before  # twenty tunnels open, their upstream handlers waiting
        for client in clients:
            client.shutdown(socket.SHUT_WR)
        for i, client in enumerate(clients):
            assert _recv_all(client)[:32] == hashlib.sha256(struct.pack("!I", i)).digest()
    finally:
        for client in clients:
            client.close()


def test_a_missing_proxy_socket_is_answered_with_502(forwarder: tuple[Path, int]) -> None:
    """The host's socket gone (the tenant's proxy stopped): the client gets a clear 502, not a hang."""
    sock_path, port = forwarder
    sock_path.unlink()
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.settimeout(30)
        answer = _recv_all(client)
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


def test_an_upstream_reset_ends_the_tunnel_and_the_forwarder_serves_on(tmp_path: Path) -> None:
    """The proxy resets a connection (a refused name, a limit): the client's tunnel ends, the next one works."""
    sock_path = tmp_path / "proxy.sock"
    first = threading.Event()

    def handler(conn: socket.socket) -> None:
        if not first.is_set():
            first.set()
            conn.recv(4)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return  # closed with linger 0
        _digest_then_payload(b"ok")(conn)

    upstream = Upstream(sock_path, handler)
    port = _free_port()
    assert start_if_mounted(str(sock_path), f"127.0.0.1:{port}") is not None
    try:
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.settimeout(30)
            client.sendall(b"ping")
            try:
                rest = _recv_all(client)
            except ConnectionResetError:
                rest = b""
            assert rest == b""
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.settimeout(30)
            client.sendall(b"x")
            client.shutdown(socket.SHUT_WR)
            assert _recv_all(client) == hashlib.sha256(b"x").digest() + b"ok"
    finally:
        upstream.listener.close()


@pytest.mark.timeout(30)
def test_a_port_that_cannot_be_bound_is_reported_not_hidden(tmp_path: Path) -> None:
    """When the loopback port is taken, the forwarder is reported as not started (the runner's hello then says
    "failed" and the host refuses the container) instead of a thread that never serves."""
    sock_path = tmp_path / "proxy.sock"
    upstream = Upstream(sock_path, _digest_then_payload(b"ok"))
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert start_if_mounted(str(sock_path), f"127.0.0.1:{port}") is None
        assert start_if_mounted(str(tmp_path / "absent.sock"), f"127.0.0.1:{_free_port()}") is None
    finally:
        taken.close()
        upstream.listener.close()
