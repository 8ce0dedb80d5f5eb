"""What a tool call knows about where it runs: tenant, session, where its events go, and the hooks that the
server tools need (the session's task list, the request's output schema, a sub-agent runner, the turn's
settings for ``config``) and, in a skill run, the tools its skills allow."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from server.contract.events import TurnEvent
from server.providers.types import Effort


class EventSink(Protocol):
    """Where a turn's events go: a session's persisted log, or a quick chat's response stream."""

    async def emit(self, event: TurnEvent) -> None: ...


class TurnSettings(Protocol):
    """The settings of the running turn the ``config`` tool may change (the agent loop's ``TurnOptions``,
    read again at every model call)."""

    model: str | None
    effort: Effort | None
    max_tokens: int | None


SubAgentRunner = Callable[["ToolContext", str, str], Awaitable[str]]
TodoSaver = Callable[[list[dict[str, Any]]], Awaitable[None]]


@dataclass
class ToolContext:
    tenant_id: str
    session_id: str | None
    sink: EventSink | None = None
    call_id: str = ""
    parent_call_id: str | None = None
    output_schema: dict[str, Any] | None = None
    structured_output: dict[str, Any] | None = None
    save_todos: TodoSaver | None = None
    run_subagent: SubAgentRunner | None = None
    depth: int = 0
    skill_scope: frozenset[str] | None = None  # a skill run: only these tools (None: the policy's)
    turn: TurnSettings | None = None  # set by the agent loop; None for a direct tool call

    def child(self, call_id: str) -> ToolContext:
        """The context of a sub-agent started by tool call `call_id`: same tenant and sandbox session."""
        return ToolContext(
            tenant_id=self.tenant_id, session_id=self.session_id, sink=self.sink, parent_call_id=call_id,
            output_schema=None, save_todos=None, run_subagent=self.run_subagent, depth=self.depth + 1,
            skill_scope=self.skill_scope,
        )

    async def emit(self, event: TurnEvent) -> None:
        """Send a typed event to the sink; a sub-agent's events name the tool call that started it."""
        if self.sink is None:
            return
        if self.parent_call_id is not None:
            event = event.model_copy(update={"parent_tool_call_id": self.parent_call_id})
        await self.sink.emit(event)
