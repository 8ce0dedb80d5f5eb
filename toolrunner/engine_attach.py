"""The runner's attach stream over any engine connection: a unix socket, TCP with TLS, or SSH (whose engine
is a local unix socket forwarded by ``toolrunner.ssh_tunnel``).

docker-py's ``attach_socket`` hands back a plain socket only for a local or plain-TCP engine (over TLS it is
an ``SSLSocket`` whose duplicate loses the TLS state; over SSH there is no socket at all). So the upgrade is
done here, on an asyncio connection of our own: ``POST /containers/{id}/attach`` with ``Upgrade: tcp``, the
engine answers ``101`` (or ``200`` from engines that hijack without the header), and from then on the
connection carries Docker's multiplexed frames, parsed by the same protocol as before.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from urllib.parse import quote, urlencode

from toolrunner.attach import DETACH_KEYS, READER_LIMIT, AttachStream, DemuxProtocol
from toolrunner.engines import EngineAddress

MAX_HEAD_BYTES = 16 * 1024


class AttachRefused(ConnectionError):
    """The engine did not upgrade the attach request (its status line says why)."""


class _UpgradeThenDemux(DemuxProtocol):
    """Reads the HTTP answer head first; once it is a success, every later byte is Docker's framing."""

    def __init__(self, reader: asyncio.StreamReader, stderr_tail: collections.deque[bytes],
                 upgraded: asyncio.Future[None]) -> None:
        super().__init__(reader, stderr_tail)
        self._head = bytearray()
        self._upgraded = upgraded

    def data_received(self, data: bytes) -> None:
        if self._upgraded.done():
            super().data_received(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD_BYTES:
                self._fail(AttachRefused("the engine's answer to attach has no end of headers"))
            return
        status_line = bytes(self._head[:self._head.find(b"\r\n")]).decode("latin-1")
        rest = bytes(self._head[end + 4:])
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] not in ("101", "200"):
            body = rest[:300].decode("utf-8", "replace").strip()
            self._fail(AttachRefused(f"the engine refused attach: {status_line} {body}".strip()))
            return
        self._head.clear()
        self._upgraded.set_result(None)
        if rest:
            super().data_received(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._upgraded.done():
            self._upgraded.set_exception(exc or AttachRefused("the engine closed the connection before attach"))
        super().connection_lost(exc)

    def _fail(self, exc: Exception) -> None:
        if not self._upgraded.done():
            self._upgraded.set_exception(exc)
        if isinstance(self._sock_transport, asyncio.Transport):
            self._sock_transport.abort()


def attach_request(address: EngineAddress, container_id: str, api_version: str) -> bytes:
    """The upgrade request docker-py would send (``Host`` as the engine expects it)."""
    query = urlencode({"stream": 1, "stdin": 1, "stdout": 1, "stderr": 1, "detachKeys": DETACH_KEYS})
    host = f"{address.host}:{address.port}" if address.scheme == "tcp" else "docker"
    path = f"/v{api_version}/containers/{quote(container_id, safe='')}/attach?{query}"
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: openanalyst\r\nContent-Type: text/plain\r\n"
            "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n").encode("ascii")


async def _connect(address: EngineAddress,
                   make: Callable[[], _UpgradeThenDemux]) -> tuple[asyncio.Transport, _UpgradeThenDemux]:
    loop = asyncio.get_running_loop()
    if address.scheme == "unix":
        assert address.path is not None
        return await loop.create_unix_connection(make, address.path)
    if address.scheme == "tcp":
        assert address.host is not None and address.port is not None
        if address.tls is None:  # plain, by the operator's explicit choice (toolrunner.engines)
            return await loop.create_connection(make, address.host, address.port)
        return await loop.create_connection(make, address.host, address.port, ssl=address.tls.context(),
                                            server_hostname=address.host)
    raise ValueError(f"{address.url}: dial an ssh engine through its tunnel's local socket")


async def open_engine_attach(address: EngineAddress, container_id: str, *, api_version: str,
                             timeout_s: float) -> AttachStream:
    """Attach to ``container_id``'s stdin/stdout/stderr on ``address``; ready for the runner protocol."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READER_LIMIT, loop=loop)
    tail: collections.deque[bytes] = collections.deque()
    upgraded: asyncio.Future[None] = loop.create_future()
    transport, protocol = await asyncio.wait_for(
        _connect(address, lambda: _UpgradeThenDemux(reader, tail, upgraded)), timeout_s)
    try:
        transport.write(attach_request(address, container_id, api_version))
        await asyncio.wait_for(asyncio.shield(upgraded), timeout_s)
    except BaseException:
        transport.abort()
        raise
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return AttachStream(reader=reader, writer=writer, _stderr=tail)
