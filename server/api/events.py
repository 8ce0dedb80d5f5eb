"""``GET /sessions/{id}/events``: a session's live event stream, and the SSE response both streams use.

The stream starts with a ``snapshot`` (no ``id:``, so a reconnecting client's Last-Event-ID stays the last
real event), replays persisted events after ``Last-Event-ID`` (or ``?after=N``; the header wins, since a
browser reconnects with the header on the original URL), then goes live. A comment line every
``sse_keepalive_s`` keeps proxies from closing an idle stream. The response watches for the client's
disconnect itself (whatever the ASGI version), so a departed client's subscription is released at once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.api.deps import ServicesDep, TenantDep
from server.approvals.state import session_state
from server.contract.events import SnapshotEvent, encode
from server.contract.openapi import COMMON, errors, sse
from server.errors import BadRequest, NotFound
from server.sessions.events import Subscription

router = APIRouter(tags=["events"], responses=errors(*COMMON))

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
KEEPALIVE = b": keep-alive\n\n"


async def sse_chunks(sub: Subscription, keepalive_s: float, *, first: bytes = b"",
                     stop_after_idle_from: int | None = None) -> AsyncIterator[bytes]:
    """Encoded SSE chunks (a burst of events is one chunk); ends when the subscription does, or — for a
    message response — after the first ``state: idle`` with seq > ``stop_after_idle_from``."""
    try:
        if first:
            yield first
        while (events := await sub.batch(keepalive_s)) is not None:
            if not events:
                yield KEEPALIVE
                continue
            if stop_after_idle_from is not None:
                for i, event in enumerate(events):
                    if (event.type == "state" and event.data.get("state") == "idle"
                            and (event.seq or 0) > stop_after_idle_from):
                        yield b"".join(e.frame for e in events[: i + 1])
                        return
            yield b"".join(e.frame for e in events)
    finally:
        sub.close()


class SSEResponse(Response):
    """An SSE response that streams ``chunks`` and stops them as soon as the client disconnects."""

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[bytes], status_code: int = 200) -> None:
        self.chunks = chunks
        self.status_code = status_code
        self.background = None
        self.init_headers(SSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = self.raw_headers

        async def stream(cancel: anyio.CancelScope) -> None:
            try:
                await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
                async for chunk in self.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass  # the client went away mid-write
            finally:
                cancel.cancel()

        async def watch(cancel: anyio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            cancel.cancel()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream, tg.cancel_scope)
                tg.start_soon(watch, tg.cancel_scope)
        finally:
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()


def parse_after(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is not None and last_event_id.strip() != "":
        try:
            value = int(last_event_id.strip())
        except ValueError:
            raise BadRequest("INVALID_LAST_EVENT_ID",
                             "Last-Event-ID must be an event sequence number") from None
        if value < 0:
            raise BadRequest("INVALID_LAST_EVENT_ID", "Last-Event-ID must not be negative")
        return value
    return after


@router.get("/sessions/{session_id}/events", response_model=None,
            responses={200: sse("SessionEvent", "A `snapshot`, the events after Last-Event-ID, then live ones."),
                       **errors(404)})
async def session_events(session_id: str, tenant: TenantDep, services: ServicesDep,
                         after: int | None = Query(default=None, ge=0, le=2**62),
                         last_event_id: str | None = Header(default=None, max_length=32)) -> SSEResponse:
    record = await services.sessions.get(tenant.id, session_id)
    start = parse_after(last_event_id, after)
    sub = await services.events.subscribe(tenant.id, session_id, start)
    snapshot = SnapshotEvent(session_id=record.id, title=record.title, model=record.model,
                             state=session_state(services, session_id),
                             last_seq=await services.events.last_seq(session_id), created_at=record.created_at)
    first = encode(snapshot)
    return SSEResponse(sse_chunks(sub, services.settings.sse_keepalive_s, first=first))


class TestEventBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field(min_length=1, max_length=40, pattern=r"^[a-z_]+$")
    data: dict[str, Any] = Field(default_factory=dict)


@router.post("/_test/sessions/{session_id}/events", include_in_schema=False)
async def append_test_event(session_id: str, body: TestEventBody, tenant: TenantDep,
                            services: ServicesDep) -> dict[str, int]:
    """Bench/test hook (``enable_test_hooks``, off by default; otherwise a plain 404): append one event,
    stamped with the server's clock at the moment of appending (``appended_at``)."""
    if not services.settings.enable_test_hooks:
        raise NotFound("NOT_FOUND", f"no route POST /_test/sessions/{session_id[:80]}/events")
    await services.sessions.get(tenant.id, session_id)
    await services.events.last_seq(session_id)
    seq = services.events.append_unchecked(tenant.id, session_id, body.type,
                                           body.data | {"appended_at": time.time()})
    return {"seq": seq}
