"""Quick chat: `POST /v1/chat` (alias `/v1/query`) runs the agent loop in a throwaway conversation of the
caller's tenant — same tools, sandbox and audit as a session — and answers as SSE or, with
`"stream": false`, as one JSON object.

The conversation lives only as long as the request: a client that disconnects cancels the turn (nobody else
can see it), and the turn's sandbox shell and REPL are closed when it ends.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, Literal

import jsonschema
from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.api.deps import ServicesDep
from server.contract.openapi import COMMON, errors, sse
from server.contract.tools import ChatAnswer
from server.errors import ApiError, ErrorDetail
from server.providers.types import Message, TextBlock
from server.sessions.agent import ERROR_STATUS, MemoryConversation, TurnOptions, TurnOutcome
from server.streaming.buffer import EventBuffer, stream_while
from server.tenancy import TenantDep
from server.tools.context import ToolContext

router = APIRouter(tags=["chat"], responses=errors(*COMMON))

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    message: str = Field(min_length=1, max_length=1_000_000)
    model: str | None = Field(default=None, max_length=200)
    effort: Literal["low", "medium", "high", "max"] | None = None
    system_prompt: str | None = Field(default=None, max_length=200_000)
    stream: bool = True
    output_schema: dict[str, Any] | None = None

    @field_validator("output_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON schema: {exc.message}") from None
            except RecursionError:  # the body's depth limit should stop this first; a 422, never a 500
                raise ValueError("not a checkable JSON schema: nested too deeply") from None
        return schema


def outcome_body(outcome: TurnOutcome) -> dict[str, Any]:
    """The non-streamed answer; checked against ``ChatAnswer`` so it cannot drift from the document."""
    body: dict[str, Any] = {"message": outcome.text, "tool_calls": outcome.tool_calls, "usage": outcome.usage()}
    if outcome.structured_output is not None:
        body["structured_output"] = outcome.structured_output
    if outcome.error is not None:  # a turn that stopped early but answered (TURN_LIMIT): said, not hidden
        error = outcome.error
        body["error"] = ErrorDetail(code=error["code"], message=error["message"],
                                    status=ERROR_STATUS.get(error["code"], 502)).model_dump()
    ChatAnswer.model_validate(body)
    return body


_CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ChatAnswer,
          **sse("ChatEvent", "`text/event-stream` by default (`\"stream\": true`): the turn's events, ending "
                             "with `state: idle`; with `\"stream\": false`, one JSON `ChatAnswer`.")},
    **errors(502, 503)}


@router.post("/v1/chat", response_model=None, responses=_CHAT_RESPONSES)
@router.post("/v1/query", response_model=None, responses=_CHAT_RESPONSES)
async def chat(body: ChatBody, tenant: TenantDep, services: ServicesDep) -> StreamingResponse | JSONResponse:
    chat_id = "chat_" + secrets.token_urlsafe(12)
    options = TurnOptions(model=body.model, system_prompt=body.system_prompt, effort=body.effort,
                          max_turns=services.settings.max_turns, output_schema=body.output_schema)
    conversation = MemoryConversation([Message(role="user", blocks=[TextBlock(text=body.message)])])

    if not body.stream:
        ctx = ToolContext(tenant_id=tenant.id, session_id=chat_id)
        try:
            outcome = await services.agent.run(ctx, conversation, options)
        finally:
            await services.sandbox_backend.close_session(tenant.id, chat_id)
        status = ERROR_STATUS.get(outcome.error["code"], 502) if outcome.error is not None else 200
        if outcome.error is not None and status >= 400:
            raise ApiError(outcome.error["code"], outcome.error["message"], status=status)
        return JSONResponse(outcome_body(outcome))

    buffer = EventBuffer()
    ctx = ToolContext(tenant_id=tenant.id, session_id=chat_id, sink=buffer)

    async def run_turn() -> None:
        try:
            await services.agent.run(ctx, conversation, options)
        finally:
            buffer.close()
            await asyncio.shield(services.sandbox_backend.close_session(tenant.id, chat_id))

    return StreamingResponse(stream_while(run_turn, buffer), media_type="text/event-stream", headers=SSE_HEADERS)
