"""Copying a server skill's files into a tenant's sandbox.

The sandbox mounts only the tenant's workspace, so a server skill's scripts are not there. Its text files are
written to ``/workspace/.openanalyst/server-skills/<name>/`` with ``write_file`` through the dispatcher: each
copy is checked against the tenant's policy, audited, and shown in the stream like any tool call (under the
call that asked for it, if any). Binary files, links and oversized files are named and left out.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.errors import ApiError
from server.skills.model import Skill
from server.skills.prompt import SERVER_SKILLS_DIR
from server.skills.reader import read_bundle
from server.tools.context import ToolContext
from server.tools.dispatch import ToolDispatcher


def needs_copy(skill: Skill) -> bool:
    return skill.source == "server" and bool(skill.files) and skill.root is not None


async def copy_into_sandbox(dispatcher: ToolDispatcher, ctx: ToolContext, skill: Skill) -> str:
    """Write the skill's text files into the sandbox; returns a report for the model of what went where."""
    assert skill.root is not None
    try:
        texts, skipped = await asyncio.to_thread(read_bundle, Path(skill.root), skill.name, skill.files)
    except OSError as exc:  # the operator's directory changed under us
        return f"The files of skill {skill.name!r} could not be read on the server: {exc.strerror}."
    target = f"{SERVER_SKILLS_DIR}/{skill.name}"
    copied: list[str] = []
    for rel, text in texts:
        try:
            result = await dispatcher.run(ctx, "write_file", {"path": f"{target}/{rel}", "content": text})
        except ApiError as exc:  # denied by policy, too many calls: the rest would fail the same way
            skipped.append(f"{rel}: {exc.code}: {exc.message}")
            break
        if result.error is not None:
            skipped.append(f"{rel}: {result.error.code}: {result.error.message}")
        else:
            copied.append(rel)
    lines = [f"The files of skill {skill.name!r} were copied into the sandbox at {target}/: "
             f"{', '.join(copied) or 'none'}."]
    if skipped:
        lines.append("Not copied: " + "; ".join(skipped))
    return "\n".join(lines)
