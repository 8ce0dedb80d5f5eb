"""The direct tool API, for CI and hosts that run their own agent loop.

`POST /v1/tools/{name}` goes through the same dispatcher as the agent loop (policy, audit, events); with a
`session_id` the call shows up in that session's event stream and shares its shell and REPL.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from server.api.chat import SSE_HEADERS
from server.api.deps import DispatcherDep, ServicesDep
from server.contract.events import ErrorEvent, ToolOutputEvent, ToolResultEvent
from server.contract.openapi import COMMON, errors, sse
from server.contract.tools import ToolCallAnswer, ToolInfo, ToolList
from server.environments.service import CALL_ENVIRONMENT, SESSION_READ
from server.errors import ApiError
from server.middleware import JSON_REFUSAL, JsonRefusal
from server.services import Services
from server.streaming.buffer import EventBuffer, stream_while
from server.tenancy import TenantDep
from server.tools.context import ToolContext
from server.tools.dispatch import new_call_id
from toolrunner.envbuild.spec import NAME_RE as ENV_NAME

router = APIRouter(tags=["tools"], responses=errors(*COMMON))


class ToolCallBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    input: Any = Field(default_factory=dict)  # any JSON: the dispatcher records and refuses a non-object
    session_id: str | None = Field(default=None, max_length=100)
    stream: bool = False
    environment: str | None = Field(default=None, min_length=1, max_length=40, pattern=f"^{ENV_NAME.pattern}$",
                                    description="The tenant environment to run in (default: the session's, else "
                                                "the tenant's default; docs/environments.md).")


@router.get("/v1/tools")
async def list_tools(tenant: TenantDep, dispatcher: DispatcherDep) -> ToolList:
    allowed = {t.name: dispatcher.allowed(tenant.id, t.name) for t in dispatcher.registry.all()}
    return ToolList(data=[ToolInfo(**t.public(), allowed=allowed[t.name],
                                   **dispatcher.registry.status(t.name, tenant.id, allowed[t.name]))
                          for t in dispatcher.registry.all()])


async def _tool_context(services: Services, tenant_id: str, session_id: str | None) -> ToolContext:
    if session_id is None:
        return ToolContext(tenant_id=tenant_id, session_id=None)
    # 404 for a missing session, another tenant's included; its environment is kept for the call's image lookup
    session = await services.sessions.get(tenant_id, session_id)
    SESSION_READ.set((tenant_id, session_id, session.environment))
    return services.session_context(tenant_id, session_id)


@router.post("/v1/tools/{name}", response_model=None, responses={
    200: {"model": ToolCallAnswer,
          **sse("ToolStreamEvent", "JSON `ToolCallAnswer` by default; with `\"stream\": true`, `text/event-stream`: "
                                   "`tool_output` chunks, then `tool_result` (or `error`).")},
    **errors(403, 404, 429, 503)})
async def call_tool(name: str, body: ToolCallBody, tenant: TenantDep, services: ServicesDep,
                    request: Request) -> JSONResponse | StreamingResponse:
    dispatcher = services.dispatcher
    call_id = new_call_id()
    refusal: JsonRefusal | None = getattr(request.state, JSON_REFUSAL, None)
    if refusal is not None:  # over the JSON limits: recorded for this tenant, never parsed (server.middleware)
        error = ApiError(refusal.code, refusal.message, status=refusal.status)
        await dispatcher.refuse_unparsed(ToolContext(tenant_id=tenant.id, session_id=None), name, error,
                                         raw_sha256=refusal.raw_sha256, call_id=call_id)
    ctx = await _tool_context(services, tenant.id, body.session_id)
    if body.environment is not None:  # 404 ENVIRONMENT_NOT_FOUND before anything runs; then this call's image
        await services.environments.check_exists(tenant.id, body.environment)
        CALL_ENVIRONMENT.set(body.environment)
    raw_sha256 = hashlib.sha256(await request.body()).hexdigest()
    # 404 / 422 before any stream starts, recorded in the audit log like every call.
    args = await dispatcher.check(ctx, name, body.input, call_id=call_id, raw_sha256=raw_sha256)
    if not body.stream or not dispatcher.allowed(tenant.id, name):
        # A denial is recorded and raised here as a plain 403, before any stream starts.
        result = await dispatcher.run_checked(ctx, name, args, call_id=call_id)
        return JSONResponse(ToolCallAnswer.of(call_id, result).model_dump(mode="json"))

    buffer = EventBuffer()

    async def on_chunk(stream: str, data: str) -> None:
        await buffer.emit(ToolOutputEvent(call_id=call_id, stream="stderr" if stream == "stderr" else "stdout",
                                          data=data))

    async def run() -> None:
        try:
            result = await dispatcher.run_checked(ctx, name, args, on_chunk=on_chunk, call_id=call_id)
            await buffer.emit(ToolResultEvent.of(call_id, result))
        except Exception as exc:
            error = exc if isinstance(exc, ApiError) else ApiError("INTERNAL_ERROR", "the tool call failed")
            await buffer.emit(ErrorEvent(code=error.code, message=error.message, status=error.status))
        finally:
            buffer.close()

    return StreamingResponse(stream_while(run, buffer), media_type="text/event-stream", headers=SSE_HEADERS)
