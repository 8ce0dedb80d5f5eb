"""Sessions: create, list (paginated), read with the whole conversation, delete, and send a message.

``POST /sessions/{id}/message`` stores the user turn, appends its ``message`` event, starts the turn in the
background and answers with the session's events from that message up to the turn's ``state: idle``; a
client that drops this response does not stop the turn (follow it on ``/events``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.api.deps import ServicesDep, TenantDep
from server.api.events import SSEResponse, sse_chunks
from server.approvals.state import session_state
from server.contract.common import PageMeta
from server.contract.events import MessageEvent
from server.contract.openapi import COMMON, errors, sse
from server.contract.sessions import Session, SessionDetail, SessionPage, SessionSummary, StoredMessage
from server.errors import Unprocessable
from server.jsonlimits import canonical_chunks
from server.providers.types import TextBlock

router = APIRouter(tags=["sessions"], responses=errors(*COMMON))


class CreateSessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: str | None = Field(default=None, max_length=500)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=200_000)
    metadata: dict[str, Any] | None = None
    environment: str | None = Field(default=None, min_length=1, max_length=40,
                                    description="A tenant environment its tool calls run in (docs/environments.md).")

    @field_validator("metadata")
    @classmethod
    def _small(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        if metadata is not None and len(metadata) > 100:
            raise ValueError("at most 100 keys")
        return metadata


NOT_BLANK = ("[^\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f"
             "\\u3000\\ufeff]")
"""A character that is not blank, spelled out so that Python (which also strips \\x1c-\\x1f and \\x85) and
a JSON Schema reader (whose \\s also takes \\ufeff) agree exactly on which messages are blank."""
_NOT_BLANK = re.compile(NOT_BLANK)


class MessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    message: str = Field(min_length=1, max_length=1_000_000, json_schema_extra={"pattern": NOT_BLANK})

    @field_validator("message")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if _NOT_BLANK.search(text) is None:
            raise ValueError("must not be blank")
        return text


def check_metadata_size(metadata: dict[str, Any] | None, limit: int) -> None:
    """422 ``SESSION_METADATA_TOO_LARGE`` past ``limit`` bytes of canonical JSON (measured without recursion,
    stopping at the limit): a session's metadata is stored and sent back on every listing."""
    if metadata is None:
        return
    size = 0
    for chunk in canonical_chunks(metadata):
        size += len(chunk.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise Unprocessable("SESSION_METADATA_TOO_LARGE",
                                f"the session's metadata is larger than the limit of {limit} bytes as JSON")


@router.post("/sessions", status_code=201, responses=errors(404, 409))
async def create_session(tenant: TenantDep, services: ServicesDep,
                         body: CreateSessionBody | None = None) -> Session:
    body = body or CreateSessionBody()
    settings = services.settings
    check_metadata_size(body.metadata, settings.max_session_metadata_bytes)
    if body.environment is not None:
        await services.environments.check_exists(tenant.id, body.environment)  # 404 ENVIRONMENT_NOT_FOUND
    record = await services.sessions.create(tenant.id, title=body.title, model=body.model,
                                            system_prompt=body.system_prompt, metadata=body.metadata,
                                            max_sessions=settings.max_sessions_per_tenant,
                                            environment=body.environment)
    services.events.created(record.id)
    if body.environment is None:
        # Start the tenant's container while the client composes its first message (not for a session in an
        # environment: its first call may wait for the build, and a container of another image would be replaced).
        await services.sandbox_backend.prestart(tenant.id)
    return Session(**record.public())


@router.get("/sessions")
async def list_sessions(tenant: TenantDep, services: ServicesDep,
                        page: int | None = Query(default=None, ge=1, le=10**6),
                        per_page: int | None = Query(default=None, ge=1, le=100)) -> SessionPage:
    """Without page or per_page: every session, as the spec says; either one pages (20 per page by default)."""
    if page is None and per_page is None:
        records, total = await services.sessions.page(tenant.id, 1, None)
        page, per_page = 1, max(total, 1)
    else:
        page, per_page = page or 1, per_page or 20
        records, total = await services.sessions.page(tenant.id, page, per_page)
    data = [SessionSummary(**r.public(), state=session_state(services, r.id))
            for r in records]
    return SessionPage(data=data, meta=PageMeta.of(page, per_page, total))


@router.get("/sessions/{session_id}", responses=errors(404))
async def get_session(session_id: str, tenant: TenantDep, services: ServicesDep) -> SessionDetail:
    record = await services.sessions.get(tenant.id, session_id)
    messages: list[dict[str, Any]] = await services.sessions.list_messages(tenant.id, session_id)
    return SessionDetail(**record.public(), state=session_state(services, session_id),
                         last_seq=await services.events.last_seq(session_id),
                         messages=[StoredMessage.model_validate(m) for m in messages],
                         todos=await services.sessions.get_todos(tenant.id, session_id))


@router.delete("/sessions/{session_id}", status_code=204, responses=errors(404))
async def delete_session(session_id: str, tenant: TenantDep, services: ServicesDep) -> Response:
    await services.sessions.get(tenant.id, session_id)
    await services.turns.cancel(session_id, silent=True)
    services.events.forget(tenant.id, session_id)
    await services.sessions.delete(tenant.id, session_id)
    # The session's shell, REPL and background processes end with it (and its sandbox uid is freed).
    await asyncio.shield(services.sandbox_backend.close_session(tenant.id, session_id))
    return Response(status_code=204)


@router.post("/sessions/{session_id}/message", response_model=None,
             responses={200: sse("SessionEvent", "The turn's events, from this message to its `state: idle`."),
                        **errors(404, 409)})
async def send_message(session_id: str, body: MessageBody, tenant: TenantDep,
                       services: ServicesDep) -> SSEResponse:
    await services.sessions.get(tenant.id, session_id)
    await services.events.last_seq(session_id)  # known before the turn appends (EventLog.append never waits)
    services.turns.reserve(session_id)
    try:
        block = TextBlock(text=body.message)
        message_id = await services.sessions.append_message(tenant.id, session_id, "user", [block.model_dump()])
        seq = services.events.append(tenant.id, session_id,
                                     MessageEvent(id=message_id, role="user", content=[block]))
        sub = await services.events.subscribe(tenant.id, session_id, seq - 1)
        services.turns.start(tenant, session_id, body.message)
    except BaseException:
        services.turns.release(session_id)
        raise
    return SSEResponse(sse_chunks(sub, services.settings.sse_keepalive_s, stop_after_idle_from=seq))
