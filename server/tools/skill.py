"""The ``skill`` tool: the agent lists the skills its tenant sees, ranks them against a query, or loads one's
instructions mid-turn (the server's skills and the tenant's own, through the same catalog as `/v1/skills`).

A server-side tool: it reads the catalog, and needs no sandbox for that. A tenant's skill is already in its
workspace; a server skill's files are not, so loading one copies its text files into the sandbox at
``/workspace/.openanalyst/server-skills/<name>/`` with ``write_file`` calls through the dispatcher — each
one checked against the tenant's policy, audited and shown in the stream as part of this call. The skill's
scripts then run through the normal tools (bash …), audited like every call.

Loading a skill here does not narrow the turn to the skill's ``allowed-tools`` (a run by the skill routes
does, ``server.skills.scope``): the conversation is the user's, the skill is reference material in it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from pydantic import Field

from server.skills.catalog import SkillCatalog
from server.skills.install import copy_into_sandbox, needs_copy
from server.skills.prompt import skill_block
from server.tools.builtin import _fail, _ok
from server.tools.context import ToolContext
from server.tools.dispatch import ToolDispatcher
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


class SkillTool:
    """The tool's handler; ``dispatcher`` is set once the dispatcher exists (it needs the registry first)."""

    def __init__(self, catalog: SkillCatalog) -> None:
        self.catalog = catalog
        self.dispatcher: ToolDispatcher | None = None

    def definition(self) -> ToolDef:
        return ToolDef("skill", DESCRIPTION, SkillInput, "server", self.run)

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        started = time.perf_counter()
        view = await self.catalog.view(ctx.tenant_id)
        name = args.get("name")
        if name is not None:
            skill = view.skills.get(name)
            if skill is None:
                known = ", ".join(view.skills) or "none"
                return _fail("skill", "INVALID_INPUT", f"no skill named {name!r}; available: {known}", started)
            text = skill_block(skill, loading=True)
            if needs_copy(skill):
                if self.dispatcher is None:
                    text += "\n\nIts files could not be copied into the sandbox (no tool dispatcher)."
                else:
                    text += "\n\n" + await copy_into_sandbox(
                        self.dispatcher, dataclasses.replace(ctx.child(ctx.call_id), skill_scope=None), skill)
            return _ok("skill", text, started)
        query = args.get("query")
        if query is not None:
            found = view.match(query, 10)
            lines = [f"{s.name} (score {score:.2f}, {s.source}): {s.description}" for s, score in found]
            return _ok("skill", "\n".join(lines) if lines else "no skill matches the query", started)
        lines = [f"{s.name} ({s.source}): {s.description}" for s in view.skills.values()]
        lines += [f"[unusable] {p.name or p.path}: {p.reason}" for p in view.problems]
        return _ok("skill", "\n".join(lines) if lines else "no skills are installed", started)
