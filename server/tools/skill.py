"""The ``skill`` tool: the agent lists the skills its tenant sees, ranks them against a query, or loads one's
instructions mid-turn (the server's skills and the tenant's own, through the same catalog as `/v1/skills`).

A server-side tool: it only reads the catalog, so it needs no sandbox; the skill's scripts then run through
the normal tools (bash …) in the tenant's sandbox, where the policy applies and every call is audited.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from server.skills.catalog import SkillCatalog
from server.skills.prompt import skill_block
from server.tools.builtin import _fail, _ok
from server.tools.context import ToolContext
from server.tools.registry import ToolDef
from server.tools.specs import ToolInput
from toolrunner.results import ToolResult

DESCRIPTION = ("List the skills available here (optionally ranked by a query), or load one skill's "
               "instructions by name before doing the task it describes.")


class SkillInput(ToolInput):
    name: str | None = Field(default=None, min_length=1, max_length=64,
                             description="Load this skill's instructions. Omit to list skills.")
    query: str | None = Field(default=None, min_length=1, max_length=1000,
                              description="When listing: rank the skills by relevance to this text.")


async def run_skill_tool(catalog: SkillCatalog, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    started = time.perf_counter()
    view = await catalog.view(ctx.tenant_id)
    name = args.get("name")
    if name is not None:
        skill = view.skills.get(name)
        if skill is None:
            known = ", ".join(view.skills) or "none"
            return _fail("skill", "INVALID_INPUT", f"no skill named {name!r}; available: {known}", started)
        return _ok("skill", skill_block(skill), started)
    query = args.get("query")
    if query is not None:
        found = view.match(query, 10)
        lines = [f"{s.name} (score {score:.2f}, {s.source}): {s.description}" for s, score in found]
        return _ok("skill", "\n".join(lines) if lines else "no skill matches the query", started)
    lines = [f"{s.name} ({s.source}): {s.description}" for s in view.skills.values()]
    lines += [f"[unusable] {p.name or p.path}: {p.reason}" for p in view.problems]
    return _ok("skill", "\n".join(lines) if lines else "no skills are installed", started)


def skill_tool(catalog: SkillCatalog) -> ToolDef:
    async def handler(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        return await run_skill_tool(catalog, ctx, args)

    return ToolDef("skill", DESCRIPTION, SkillInput, "server", handler)
