"""The asyncio transport: one ``httpx.AsyncClient``, the retry rule of ``_policy``, and event streams that
resume after a dropped connection where the server gives event ids."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from openanalyst_client._policy import (
    ResumeState,
    backoff,
    error_from,
    reconnect_delay,
    refused_at_start,
    status_delay,
    transport_delay,
)
from openanalyst_client.config import POOL_LIMITS, ClientConfig
from openanalyst_client.errors import StreamInterrupted, TransportError
from openanalyst_client.events import AnyEvent, parse_event
from openanalyst_client.sse import aiter_messages

Opener = Callable[[int | None], contextlib.AbstractAsyncContextManager[httpx.Response]]


class AsyncHttp:
    def __init__(self, config: ClientConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.client = httpx.AsyncClient(base_url=config.base_url, headers=config.headers(), transport=transport,
                                   timeout=httpx.Timeout(config.timeout, connect=min(10.0, config.timeout)),
                                   limits=POOL_LIMITS)
        self.retries = 0  # retries made so far (a figure for users and tests)

    async def close(self) -> None:
        await self.client.aclose()

    @contextlib.asynccontextmanager
    async def open(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """A streamed response with a 2xx status (bodies not read yet), after the retries the rule allows."""
        attempt = 0
        while True:
            request = self.client.build_request(method, path, **kwargs)
            try:
                response = await self.client.send(request, stream=True)
            except httpx.TransportError as exc:
                delay = transport_delay(method, exc, attempt, self.config)
                if delay is None:
                    raise TransportError(f"{method} {path}: {exc!r}") from exc
            else:
                if response.is_success:
                    try:
                        yield response
                    finally:
                        await response.aclose()
                    return
                try:
                    error = error_from(response, await response.aread())
                except httpx.TransportError as exc:
                    raise TransportError(f"{method} {path}: {exc!r}") from exc
                finally:
                    await response.aclose()
                delay = status_delay(method, error.status, error.retry_after, attempt, self.config)
                if delay is None:
                    raise error
            attempt += 1
            self.retries += 1
            await asyncio.sleep(delay)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A whole response (body read), or the typed error."""
        async with self.open(method, path, **kwargs) as response:
            try:
                await response.aread()
            except httpx.TransportError as exc:
                raise TransportError(f"{method} {path}: {exc!r}") from exc
            return response

    async def save(self, target: str | Path, what: str, method: str, path: str, **kwargs: Any) -> Path:
        """A response's body streamed into ``target``, written whole or not at all: into ``target.part``,
        renamed when the last byte is in, removed on any failure (a cut is a ``TransportError`` naming
        ``what``)."""
        final = Path(target)
        partial = final.with_name(final.name + ".part")
        try:
            async with self.open(method, path, **kwargs) as response:
                with partial.open("wb") as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise TransportError(f"{what} cut: {exc!r}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(final)
        return final

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self.request(method, path, **kwargs)).json()


class AsyncEventStream:
    """Iterate a stream's events (typed) with ``async for``; ``async with`` or ``aclose()`` to stop early.

    ``opener(None)`` opens the stream; with ``state`` (a session stream) a cut connection is re-opened with
    ``opener(last_seq)``, which sends ``Last-Event-ID``, up to ``max_reconnects`` times in a row without a
    new event. Without ``state`` a cut raises ``StreamInterrupted``. A stream whose first event is a 429
    ``error`` (a streamed tool call over the tenant's call cap: refused before it ran) is opened again under
    the retry bound, as a 429 answer would be.
    """

    def __init__(self, http: AsyncHttp, opener: Opener, state: ResumeState | None = None) -> None:
        self._http = http
        self._opener = opener
        self.state = state
        self.reconnects = 0
        self._events = self._run()

    def __aiter__(self) -> AsyncIterator[AnyEvent]:
        return self._events

    async def __anext__(self) -> AnyEvent:
        return await self._events.__anext__()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def _run(self) -> AsyncGenerator[AnyEvent, None]:
        state, failures, count, refusals = self.state, 0, 0, 0
        start = state.resume_point() if state is not None else None
        retry_wait: float | None = None
        while True:
            try:
                async with self._opener(start) as response:
                    async for message in aiter_messages(response.aiter_lines()):
                        event = parse_event(message.event, message.data, message.id)
                        if refused_at_start(event, count) and refusals < self._http.config.max_retries:
                            refusals += 1  # over the call cap before anything ran: the same call again, later
                            retry_wait = max(1.0, backoff(refusals - 1))
                            break
                        if state is not None:
                            if not state.accept(event):
                                if state.resume_at is not None:
                                    break
                                continue
                            if event.seq is not None:
                                failures = 0
                        count += 1
                        yield event
                        if state is not None and state.done:
                            return
                    else:
                        return  # the server ended the stream
            except (httpx.TransportError, TransportError) as exc:
                if state is None or state.resume_point() is None:
                    raise StreamInterrupted(f"stream cut after {count} events and cannot be resumed: {exc!r}",
                                            count) from exc
                failures += 1
                if failures > self._http.config.max_reconnects:
                    raise StreamInterrupted(f"stream cut {failures} times in a row: {exc!r}", count) from exc
                await asyncio.sleep(reconnect_delay(failures))
            if retry_wait is not None:
                self._http.retries += 1
                await asyncio.sleep(retry_wait)
                retry_wait = None
                continue
            self.reconnects += 1
            if state is not None:
                start = state.resume_point()
                state.resume_at = None
