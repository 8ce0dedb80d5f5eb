"""Skills: `GET /v1/skills`, `POST /v1/skills/match`, `POST /v1/skills/execute`, `POST /v1/skills/{name}/run`.

Thin routes over ``server.skills``: the catalog says what the caller's tenant sees (the server's skills and
its own, never another tenant's), BM25 ranks them, and a run goes through the agent loop like `/v1/chat` —
the same stream, or with `"stream": false` the same answer plus `skills`. Which skills run is also in the
`X-OpenAnalyst-Skills` header.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, StreamingResponse

from server.api.chat import SSE_HEADERS, outcome_body
from server.api.deps import ServicesDep, TenantDep
from server.contract.openapi import COMMON, errors, sse
from server.errors import ApiError, NotFound
from server.providers.types import Message, TextBlock
from server.services import Services
from server.sessions.agent import ERROR_STATUS, MemoryConversation, TurnOptions
from server.skills.catalog import View
from server.skills.contract import (
    ExecuteBody,
    ExecuteByNames,
    MatchBody,
    RunBody,
    RunOptions,
    SkillInfo,
    SkillList,
    SkillMatch,
    SkillMatches,
    SkillProblem,
    SkillRunAnswer,
)
from server.skills.install import copy_into_sandbox, needs_copy
from server.skills.model import Skill
from server.skills.prompt import default_message, system_prompt
from server.skills.scope import tool_scope
from server.streaming.buffer import EventBuffer, stream_while
from server.tools.context import ToolContext

router = APIRouter(tags=["skills"], responses=errors(*COMMON))

SKILLS_HEADER = "X-OpenAnalyst-Skills"

_RUN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": SkillRunAnswer,
          "headers": {SKILLS_HEADER: {"description": "The skills that run, comma-separated.", "required": True,
                                      "schema": {"type": "string"}}},
          **sse("ChatEvent", "`text/event-stream` by default, the same events as `/v1/chat`; the skills that run "
                             "are named in the `X-OpenAnalyst-Skills` header. With `\"stream\": false`, one JSON "
                             "`SkillRunAnswer`.")},
    **errors(404, 502, 503)}


async def _prepare(services: Services, ctx: ToolContext, skills: Sequence[Skill], extra: str | None) -> str:
    """Copy the server skills' files into the sandbox (audited write_file calls, in the run's stream), then
    the system prompt that says where they are."""
    copies = [await copy_into_sandbox(services.dispatcher, ctx, s) for s in skills if needs_copy(s)]
    return system_prompt(skills, extra, copies)


async def respond(services: Services, tenant_id: str, skills: Sequence[Skill], message: str,
                  options: RunOptions) -> StreamingResponse | JSONResponse:
    """The agent loop's answer to ``message`` with ``skills`` loaded, streamed or as one JSON object."""
    run_id = "skill_" + secrets.token_urlsafe(12)
    turn = TurnOptions(model=options.model, effort=options.effort, max_turns=services.settings.max_turns)
    conversation = MemoryConversation([Message(role="user", blocks=[TextBlock(text=message)])])
    names = [s.name for s in skills]
    headers = {SKILLS_HEADER: ",".join(names)}

    if not options.stream:
        ctx = ToolContext(tenant_id=tenant_id, session_id=run_id)
        try:
            turn.system_prompt = await _prepare(services, ctx, skills, options.system_prompt)
            ctx.skill_scope = tool_scope(skills)  # after the server's own copies: the model's calls only
            outcome = await services.agent.run(ctx, conversation, turn)
        finally:
            await services.sandbox_backend.close_session(tenant_id, run_id)
        status = ERROR_STATUS.get(outcome.error["code"], 502) if outcome.error is not None else 200
        if outcome.error is not None and status >= 400:
            raise ApiError(outcome.error["code"], outcome.error["message"], status=status)
        body = {**outcome_body(outcome), "skills": names}
        SkillRunAnswer.model_validate(body)
        return JSONResponse(body, headers=headers)

    buffer = EventBuffer()
    ctx = ToolContext(tenant_id=tenant_id, session_id=run_id, sink=buffer)

    async def run_turn() -> None:
        try:
            turn.system_prompt = await _prepare(services, ctx, skills, options.system_prompt)
            ctx.skill_scope = tool_scope(skills)
            await services.agent.run(ctx, conversation, turn)
        finally:
            buffer.close()
            await asyncio.shield(services.sandbox_backend.close_session(tenant_id, run_id))

    return StreamingResponse(stream_while(run_turn, buffer), media_type="text/event-stream",
                             headers={**SSE_HEADERS, **headers})


async def _view(services: Services, tenant_id: str) -> View:
    """The tenant's catalog now."""
    return await services.skills.view(tenant_id)


@router.get("/v1/skills", responses=errors(503))
async def list_skills(tenant: TenantDep, services: ServicesDep) -> SkillList:
    view = await _view(services, tenant.id)
    return SkillList(data=[SkillInfo.of(s) for s in view.skills.values()],
                     problems=[SkillProblem.of(p) for p in view.problems])


@router.post("/v1/skills/match", responses=errors(503))
async def match_skills(body: MatchBody, tenant: TenantDep, services: ServicesDep) -> SkillMatches:
    view = await _view(services, tenant.id)
    found = view.match(body.query, body.limit)
    return SkillMatches(query=body.query,
                        data=[SkillMatch(**SkillInfo.of(s).model_dump(), score=score) for s, score in found])


@router.post("/v1/skills/execute", response_model=None, responses=_RUN_RESPONSES)
async def execute_skills(body: ExecuteBody, tenant: TenantDep,
                         services: ServicesDep) -> StreamingResponse | JSONResponse:
    view = await _view(services, tenant.id)
    if isinstance(body, ExecuteByNames):
        missing = [n for n in body.names if n not in view.skills]
        if missing:
            raise NotFound("SKILL_NOT_FOUND", f"no skill named {', '.join(map(repr, missing))}; GET /v1/skills "
                                              "lists them")
        chosen = [view.skills[n] for n in dict.fromkeys(body.names)]
        message = body.message or default_message(chosen)
    else:
        chosen = [s for s, _ in view.match(body.query, body.limit)]
        if not chosen:
            raise NotFound("NO_SKILL_MATCHED", "no skill matches the query; GET /v1/skills lists them")
        message = body.message or body.query
    return await respond(services, tenant.id, chosen, message, body)


@router.post("/v1/skills/{name}/run", response_model=None, responses=_RUN_RESPONSES)
async def run_skill(tenant: TenantDep, services: ServicesDep,
                    name: str = Path(max_length=64), body: RunBody | None = None) -> StreamingResponse | JSONResponse:
    view = await _view(services, tenant.id)
    skill = view.skills.get(name)
    if skill is None:
        raise NotFound("SKILL_NOT_FOUND", f"no skill named {name[:64]!r}; GET /v1/skills lists them")
    body = body or RunBody()
    return await respond(services, tenant.id, [skill], body.input or default_message([skill]), body)
