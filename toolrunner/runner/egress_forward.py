"""Inside a sandbox under ``allowlist``: serve the host's egress proxy on the container's own loopback.

The container has ``network_mode=none`` (only ``lo``); the host mounts one directory (read-only) holding the
tenant's proxy socket. The runner starts this forwarder on a thread of its own (``start_if_mounted``): it
listens on ``127.0.0.1:3128`` and copies each accepted connection to that socket, so that
``HTTP(S)_PROXY=http://127.0.0.1:3128`` works for curl, pip, npm and urllib. It is not a security boundary:
tool code could talk to the socket itself, and the socket only ever reaches the proxy, which knows the tenant
from the socket and the session and call from the credential in each call's proxy variables
(``egress_env.call_proxy_env``, derived from the container's key, docs/egress.md).

Standard library only (it runs with the image's python3); ``python3 egress_forward.py [--listen HOST:PORT]
[--socket PATH]`` runs it on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import socket
import threading
from collections.abc import Callable

from toolrunner.runner.egress_env import LISTEN, SOCKET

PIPE_SIZE = 1 << 20
_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Tunnel:
    """Both directions of one connection: ``ended`` is set when one fails, or when both reached their end."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ended: asyncio.Future[None] = loop.create_future()
        self.finished = 0

    def direction_ended(self, failed: bool) -> None:
        self.finished += 1
        if (failed or self.finished == 2) and not self.ended.done():
            self.ended.set_result(None)


class _Pump:
    """One direction, src → dst, by non-blocking ``splice(2)`` through a pipe, driven by the event loop: the
    kernel moves the bytes (no copy into Python, hardly any time under the runner's interpreter lock), and no
    thread is spent (threads would count against the tenant's own pids limit)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket,
                 tunnel: _Tunnel) -> None:
        self.loop, self.src, self.dst, self.tunnel = loop, src.fileno(), dst.fileno(), tunnel
        self.dst_socket = dst
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: the default 64 KiB pipe
            fcntl.fcntl(self.pipe_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self.in_pipe = 0
        self.eof = self.reading = self.writing = self.closed = False

    def start(self) -> None:
        self._read_on()

    def _read_on(self) -> None:
        if not self.reading and not self.closed:
            self.loop.add_reader(self.src, self._readable)
            self.reading = True

    def _read_off(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.src)
            self.reading = False

    def _readable(self) -> None:
        try:
            n = os.splice(self.src, self.pipe_w, PIPE_SIZE, flags=_FLAGS)
        except BlockingIOError:
            return
        except OSError:
            self._end(failed=True)
            return
        if n == 0:
            self.eof = True
            self._read_off()
        self.in_pipe += n
        self._flush()

    def _writable(self) -> None:
        self.loop.remove_writer(self.dst)
        self.writing = False
        self._flush()
        if not self.writing and not self.eof:
            self._read_on()

    def _flush(self) -> None:
        while self.in_pipe:
            try:
                self.in_pipe -= os.splice(self.pipe_r, self.dst, self.in_pipe, flags=_FLAGS)
            except BlockingIOError:  # dst is full: read no more until it drains
                self._read_off()
                if not self.writing and not self.closed:
                    self.loop.add_writer(self.dst, self._writable)
                    self.writing = True
                return
            except OSError:
                self._end(failed=True)
                return
        if self.eof:
            with contextlib.suppress(OSError):
                self.dst_socket.shutdown(socket.SHUT_WR)
            self._end(failed=False)

    def _end(self, failed: bool) -> None:
        self.close()
        self.tunnel.direction_ended(failed)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._read_off()
        if self.writing:
            self.loop.remove_writer(self.dst)
            self.writing = False
        for fd in (self.pipe_r, self.pipe_w):
            with contextlib.suppress(OSError):
                os.close(fd)


async def _serve_one(path: str, client: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.setblocking(False)
    try:
        try:
            await loop.sock_connect(upstream, path)
        except OSError:
            with contextlib.suppress(OSError):
                await loop.sock_sendall(client, _BAD_GATEWAY)
            return
        tunnel = _Tunnel(loop)
        pumps = (_Pump(loop, client, upstream, tunnel), _Pump(loop, upstream, client, tunnel))
        try:
            for pump in pumps:
                pump.start()
            await tunnel.ended
        finally:
            for pump in pumps:
                pump.close()
    finally:
        upstream.close()
        client.close()


async def serve(path: str, host: str, port: int, on_listening: Callable[[], None] | None = None) -> None:
    """Forward every connection to ``host:port`` to the socket at ``path``; ``on_listening`` once bound."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server((host, port), backlog=128)
    listener.setblocking(False)
    tunnels: set[asyncio.Task[None]] = set()  # held, so that a running tunnel is never collected
    if on_listening is not None:
        on_listening()
    with listener:
        while True:
            client, _ = await loop.sock_accept(listener)
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(_serve_one(path, client))
            tunnels.add(task)
            task.add_done_callback(tunnels.discard)


def start_if_mounted(socket_path: str = SOCKET, listen: str = LISTEN, wait_s: float = 5.0
                     ) -> threading.Thread | None:
    """When the host mounted a proxy socket, serve it on ``listen`` from a daemon thread; the thread once
    listening, None when there is no socket or the port cannot be bound (the runner logs it)."""
    if not os.path.exists(socket_path):
        return None
    host, _, port = listen.rpartition(":")
    ready = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(serve(socket_path, host, int(port), ready.set))
        except OSError as exc:
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="egress-forward", daemon=True)
    thread.start()
    ready.wait(wait_s)
    return None if failed or not ready.is_set() else thread


def main() -> None:
    parser = argparse.ArgumentParser(description="forward 127.0.0.1:3128 to the egress proxy's socket")
    parser.add_argument("--listen", default=LISTEN)
    parser.add_argument("--socket", default=SOCKET)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve(args.socket, host, int(port)))


if __name__ == "__main__":
    main()
