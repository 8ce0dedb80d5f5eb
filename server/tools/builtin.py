"""Tools the server runs itself: they touch session state or the conversation, never the filesystem, so they
need no sandbox. Each is validated, audited and evented exactly like a sandbox tool (see dispatch.py)."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, Field

from server.contract.events import MessageEvent
from server.providers.types import TextBlock
from server.tools.context import ToolContext
from server.tools.registry import ToolDef, ToolRegistry
from server.tools.specs import ToolInput
from toolrunner.results import ToolError, ToolResult

MAX_SLEEP_S = 60.0
MAX_AGENT_DEPTH = 2


class TodoItem(BaseModel):
    content: str = Field(min_length=1, max_length=2000)
    status: Literal["pending", "in_progress", "completed"]
    active_form: str | None = Field(default=None, max_length=2000)


class TodoWriteInput(ToolInput):
    todos: list[TodoItem] = Field(max_length=200, description="The whole task list; replaces the previous one.")


class SleepInput(ToolInput):
    seconds: float = Field(gt=0, le=MAX_SLEEP_S)


class SendUserMessageInput(ToolInput):
    message: str = Field(min_length=1, max_length=100_000)


class ToolSearchInput(ToolInput):
    query: str = Field(min_length=1, max_length=1000)
    max_results: int = Field(default=5, ge=1, le=50)


class AgentInput(ToolInput):
    description: str = Field(min_length=1, max_length=200, description="A few words naming the sub-task.")
    prompt: str = Field(min_length=1, max_length=100_000, description="The task for the sub-agent.")


def _ok(name: str, output: str, started: float) -> ToolResult:
    return ToolResult(tool_name=name, output=output, exit_code=0,
                      duration_ms=round((time.perf_counter() - started) * 1000, 3),
                      truncated=False, timed_out=False, limit=None, error=None)


def _fail(name: str, code: str, message: str, started: float) -> ToolResult:
    return ToolResult(tool_name=name, output="", exit_code=1,
                      duration_ms=round((time.perf_counter() - started) * 1000, 3),
                      truncated=False, timed_out=False, limit=None, error=ToolError.host(code, message))


async def todo_write(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    started = time.perf_counter()
    todos = args["todos"]
    if ctx.save_todos is not None:
        await ctx.save_todos(todos)
    done = sum(1 for t in todos if t["status"] == "completed")
    return _ok("todo_write", f"task list saved: {len(todos)} items, {done} completed", started)


async def sleep(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    started = time.perf_counter()
    await asyncio.sleep(float(args["seconds"]))
    return _ok("sleep", f"slept {args['seconds']} s", started)


async def send_user_message(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    started = time.perf_counter()
    await ctx.emit(MessageEvent(role="assistant", kind="send_user_message",
                                content=[TextBlock(text=args["message"])]))
    return _ok("send_user_message", "message sent to the user", started)


async def structured_output(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    started = time.perf_counter()
    if ctx.output_schema is None:
        return _fail("structured_output", "TOOL_UNAVAILABLE",
                     "this request gave no output_schema, so there is nothing to validate against", started)
    try:
        jsonschema.validate(args, ctx.output_schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return _fail("structured_output", "INVALID_INPUT", f"does not match the schema at {where}: {exc.message}",
                     started)
    ctx.structured_output = args
    return _ok("structured_output", json.dumps(args, ensure_ascii=False), started)


async def tool_search(registry: ToolRegistry, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    started = time.perf_counter()
    found = registry.search(args["query"], args.get("max_results", 5))
    lines = [f"{t.name}: {t.description}" for t in found]
    return _ok("tool_search", "\n".join(lines) if lines else "no tool matches", started)


async def agent(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    started = time.perf_counter()
    if ctx.run_subagent is None:
        return _fail("agent", "TOOL_UNAVAILABLE", "sub-agents need a model provider", started)
    if ctx.depth >= MAX_AGENT_DEPTH:
        return _fail("agent", "INVALID_INPUT", f"sub-agents may nest {MAX_AGENT_DEPTH} deep at most", started)
    answer = await ctx.run_subagent(ctx.child(ctx.call_id), args["description"], args["prompt"])
    return _ok("agent", answer, started)


def server_tools() -> list[ToolDef]:
    """The server tools but tool_search, which is registered last since it searches the whole registry."""
    return [
        ToolDef("todo_write", "Replace the session's task list (shown in the session's details).",
                TodoWriteInput, "server", todo_write),
        ToolDef("sleep", f"Wait up to {MAX_SLEEP_S:.0f} seconds.", SleepInput, "server", sleep),
        ToolDef("send_user_message", "Send a message to the user while working.", SendUserMessageInput,
                "server", send_user_message),
        ToolDef("structured_output", "Return the final answer as an object matching the request's output schema.",
                None, "server", structured_output, schema_override={"type": "object"}),
        ToolDef("agent", "Start a sub-agent with its own context on a task; it shares this sandbox.",
                AgentInput, "server", agent),
    ]


def default_registry() -> ToolRegistry:
    registry = ToolRegistry.with_sandbox_tools(server_tools())
    registry.add(ToolDef("tool_search", "Find tools by what they do.", ToolSearchInput, "server",
                         functools.partial(tool_search, registry)))
    return registry
