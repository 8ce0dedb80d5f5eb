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


def _sse_block(block: str) -> tuple[str, str] | None:
    """One event block → (event, data); None for a block without data (e.g. a ``: keep-alive`` comment)."""
    if block.startswith("event:"):  # the usual shapes, without a line loop: "event: x\ndata: {...}"
        nl = block.find("\n")
        rest = block[nl + 1:] if nl >= 0 else ""
        if rest.startswith("data: ") and "\n" not in rest:
            return block[6:nl].strip(), rest[6:]
    elif block.startswith("data: ") and "\n" not in block:
        return "message", block[6:]
    event = "message"
    data: list[str] = []
    for line in block.split("\n"):
        if line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
        elif line.startswith("event:"):
            event = line[6:].strip()
    return (event, "\n".join(data)) if data else None


async def sse_batches(resp: httpx.Response) -> AsyncIterator[list[tuple[str, str]]]:
    """(event, data) pairs of a text/event-stream, one list per network read."""
    buf = b""
    async for chunk in resp.aiter_bytes():
        buf += chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        complete, sep, buf = buf.rpartition(b"\n\n")
        if len(buf) > MAX_EVENT:
            raise FramingError(f"an SSE event exceeds {MAX_EVENT} bytes")
        if sep:  # decoded once per read: a complete block never ends inside a UTF-8 sequence
            blocks = complete.decode("utf-8", "replace").split("\n\n")
            events = [e for e in map(_sse_block, blocks) if e is not None]
            if events:
                yield events
    tail = buf.decode("utf-8", "replace").strip()
    if tail and (last := _sse_block(tail)) is not None:
        yield [last]


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
