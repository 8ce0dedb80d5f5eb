"""Stream framing shared by the adapters: SSE events and NDJSON lines, delivered in batches — everything that
arrived in one network read — so that an adapter can merge the text deltas of one read into one
``TextDelta``. Merging adds no latency (those bytes were already here) and cuts the per-event cost of every
layer above (router, agent loop, SSE to the client) when a provider streams faster than we consume.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, TypeVar

import httpx

from server.providers.types import StreamEvent

MAX_EVENT = 16 * 1024 * 1024
T_contra = TypeVar("T_contra", contravariant=True)


class FramingError(ValueError):
    """The byte stream does not frame into events (an event larger than MAX_EVENT, bad binary framing)."""


class WireParser(Protocol[T_contra]):
    """Turns one wire event into normalised events; a ``str`` is a piece of answer text (to be merged)."""

    done: bool

    def feed(self, item: T_contra) -> list[StreamEvent | str]: ...

    def finish(self) -> list[StreamEvent]:
        """The input ended without ``done``: the closing events, or raise if the answer is incomplete."""
        ...


def _sse_block(block: bytes) -> tuple[str, str] | None:
    event = "message"
    data: list[str] = []
    for line in block.decode("utf-8", "replace").split("\n"):
        if line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
        elif line.startswith("event:"):
            event = line[6:].strip()
    return (event, "\n".join(data)) if data else None  # comment-only blocks (": ping") carry no data


async def sse_batches(resp: httpx.Response) -> AsyncIterator[list[tuple[str, str]]]:
    """(event, data) pairs of a text/event-stream, one list per network read."""
    buf = b""
    async for chunk in resp.aiter_bytes():
        buf += chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        *blocks, buf = buf.split(b"\n\n")
        if len(buf) > MAX_EVENT:
            raise FramingError(f"an SSE event exceeds {MAX_EVENT} bytes")
        events = [e for e in map(_sse_block, blocks) if e is not None]
        if events:
            yield events
    tail = _sse_block(buf.strip()) if buf.strip() else None
    if tail is not None:
        yield [tail]


async def line_batches(resp: httpx.Response) -> AsyncIterator[list[str]]:
    """Non-empty lines of a newline-delimited body, one list per network read."""
    buf = b""
    async for chunk in resp.aiter_bytes():
        buf += chunk
        *lines, buf = buf.split(b"\n")
        if len(buf) > MAX_EVENT:
            raise FramingError(f"a line exceeds {MAX_EVENT} bytes")
        out = [line.decode("utf-8", "replace") for line in lines if line.strip()]
        if out:
            yield out
    if buf.strip():
        yield [buf.decode("utf-8", "replace")]
