"""A bounded, batching event buffer between a producer (an agent turn) and one SSE response.

Events are appended without awaiting the network; the response drains everything queued at once and writes it
as one chunk, so a burst of thousands of text deltas costs a handful of socket writes. When the buffer is full
the producer waits (a quick chat has exactly one reader, so backpressure is the honest answer there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from server.contract.events import AnyEvent, encode

dumps_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class EventBuffer:
    def __init__(self, max_events: int = 4096) -> None:
        self._items: list[bytes] = []
        self._max = max_events
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._closed = False

    async def emit(self, event: AnyEvent) -> None:
        """Queue one typed event (``server.contract.events``); waits while the buffer is full."""
        while len(self._items) >= self._max and not self._closed:
            self._drained.clear()
            await self._drained.wait()
        if self._closed:
            return
        self._items.append(encode(event))
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()
        self._drained.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Everything queued since the last chunk, as one byte string, until closed and empty."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            items, self._items = self._items, []
            self._drained.set()
            if items:
                yield b"".join(items)
            if self._closed and not self._items:
                return


async def stream_while(produce: Callable[[], Coroutine[Any, Any, None]], buffer: EventBuffer) -> AsyncIterator[bytes]:
    """Run `produce` (which fills and finally closes `buffer`) while streaming the buffer; a client that
    goes away cancels the producer, whose own clean-up still runs."""
    task = asyncio.create_task(produce())
    try:
        async for chunk in buffer.chunks():
            yield chunk
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
