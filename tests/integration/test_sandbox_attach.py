"""The attach-stream demultiplexer over a real socket pair: stdout frames become the protocol bytes whatever
the split, stderr frames go to a bounded tail, and a stream that is not Docker's framing fails loudly."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from toolrunner.attach import STDERR_TAIL_BYTES, open_attach_stream

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


async def test_stdout_is_reassembled_across_any_split_and_stderr_is_kept_apart() -> None:
    """Frames cut at every byte boundary still yield exactly the stdout bytes; stderr lands in the tail."""
    ours, theirs = socket.socketpair()
    stream = await open_attach_stream(ours)
    wire = frame(1, b"hello ") + frame(2, b"diagnostic\n") + frame(1, b"world") + frame(1, b"")
    try:
        for i in range(len(wire)):  # one byte at a time: headers and payloads split everywhere
            theirs.sendall(wire[i:i + 1])
        assert await asyncio.wait_for(stream.reader.readexactly(11), 5) == b"hello world"
        assert stream.stderr_tail() == "diagnostic\n"
        stream.writer.write(b"to-stdin")
        await stream.writer.drain()
        assert theirs.recv(100) == b"to-stdin"  # input is not framed
    finally:
        await stream.close()
        theirs.close()


async def test_stderr_tail_is_bounded() -> None:
    """A runner flooding stderr cannot grow the host's memory past the tail size."""
    ours, theirs = socket.socketpair()
    stream = await open_attach_stream(ours)
    try:
        chunk = b"e" * 8192
        flood = b"".join(frame(2, chunk) for _ in range(64)) + frame(1, b"x")
        sender = asyncio.create_task(asyncio.to_thread(theirs.sendall, flood))  # 512 KiB > socket buffer
        assert await asyncio.wait_for(stream.reader.readexactly(1), 5) == b"x"
        await asyncio.wait_for(sender, 5)
        assert sum(len(c) for c in stream._stderr) <= STDERR_TAIL_BYTES + len(chunk)
    finally:
        await stream.close()
        theirs.close()


async def test_unframed_stream_fails_the_reader_and_eof_is_seen() -> None:
    """Bytes that are not Docker's 8-byte framing make the reader raise; a closed peer reads as EOF."""
    ours, theirs = socket.socketpair()
    stream = await open_attach_stream(ours)
    theirs.sendall(b'{"type": "hello"}  not framed')
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(stream.reader.read(100), 5)
    theirs.close()

    ours2, theirs2 = socket.socketpair()
    stream2 = await open_attach_stream(ours2)
    theirs2.close()
    assert await asyncio.wait_for(stream2.reader.read(), 5) == b""
    assert stream2.closed
    await stream2.close()
    await stream.close()
