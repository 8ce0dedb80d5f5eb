"""Turn a container's attach socket into an asyncio (reader, writer) pair for the runner protocol.

With ``tty=False`` Docker multiplexes the container's output: each frame is an 8-byte header
``[stream, 0, 0, 0, size (big-endian u32)]`` then ``size`` bytes, stream 1 = stdout, 2 = stderr. Stdout
payloads are the protocol bytes and go to the reader; stderr payloads (runner diagnostics) go to a bounded
tail kept for logs and error messages. Input is not framed: bytes written go straight to the runner's stdin.

Docker scans attached stdin for a *detach key sequence* (default ctrl-p ctrl-q = 0x10 0x11) and drops the
connection when it sees one — a 4-byte frame length can contain exactly those bytes. ``DETACH_KEYS`` is five
NUL bytes instead, which the protocol can never send (lengths stay below 8 MiB, so at most three NULs precede
the ``{`` of a frame, and JSON escapes NUL inside strings).
"""

from __future__ import annotations

import asyncio
import collections
import socket
from dataclasses import dataclass

DETACH_KEYS = ",".join(["ctrl-@"] * 5)
HEADER = 8
STDOUT, STDERR = 1, 2
STDERR_TAIL_BYTES = 64 * 1024
READER_LIMIT = 16 * 1024 * 1024


class DemuxProtocol(asyncio.StreamReaderProtocol):
    """Splits Docker's multiplexed stream: stdout into the reader, stderr into a bounded tail."""

    def __init__(self, reader: asyncio.StreamReader, stderr_tail: collections.deque[bytes]) -> None:
        super().__init__(reader)
        self._reader = reader  # strong reference: the base class holds only a weak one
        self._buf = bytearray()
        self._stderr = stderr_tail
        self._stderr_bytes = 0
        self._sock_transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sock_transport = transport
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        out: list[bytes] = []
        while len(buf) - pos >= HEADER:
            stream = buf[pos]
            size = int.from_bytes(buf[pos + 4:pos + 8], "big")
            if stream > STDERR or buf[pos + 1:pos + 4] != b"\0\0\0":
                # Not Docker's framing (a tty container, or corruption): the channel cannot be trusted.
                self._reader.set_exception(ConnectionError("attach stream is not multiplexed as expected"))
                if isinstance(self._sock_transport, asyncio.Transport):
                    self._sock_transport.abort()
                return
            if len(buf) - pos - HEADER < size:
                break
            payload = bytes(buf[pos + HEADER:pos + HEADER + size])
            pos += HEADER + size
            if stream == STDERR:
                self._keep_stderr(payload)
            else:
                out.append(payload)
        del buf[:pos]
        if out:
            self._reader.feed_data(b"".join(out))

    def _keep_stderr(self, payload: bytes) -> None:
        self._stderr.append(payload)
        self._stderr_bytes += len(payload)
        while self._stderr_bytes > STDERR_TAIL_BYTES and len(self._stderr) > 1:
            self._stderr_bytes -= len(self._stderr.popleft())


@dataclass
class AttachStream:
    """The runner's stdout as a reader, its stdin as a writer, and the tail of its stderr."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    _stderr: collections.deque[bytes]

    def stderr_tail(self, limit: int = 4096) -> str:
        """The last ``limit`` bytes the runner wrote to stderr, decoded leniently."""
        return b"".join(self._stderr)[-limit:].decode("utf-8", "replace")

    @property
    def closed(self) -> bool:
        """Whether the connection has ended (the container stopped, or the socket broke)."""
        return self.reader.at_eof() or self.writer.is_closing() or self.reader.exception() is not None

    async def close(self) -> None:
        """Drop the connection without closing the container's stdin (it stays open for a re-attach)."""
        self.writer.transport.abort()


async def open_attach_stream(sock: socket.socket) -> AttachStream:
    """Wrap a connected attach socket (its HTTP upgrade already done) in asyncio streams."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    reader = asyncio.StreamReader(limit=READER_LIMIT, loop=loop)
    tail: collections.deque[bytes] = collections.deque()
    transport, protocol = await loop.create_connection(lambda: DemuxProtocol(reader, tail), sock=sock)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return AttachStream(reader=reader, writer=writer, _stderr=tail)
