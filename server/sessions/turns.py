"""The agent loop as a session's `TurnRunner`: history from the store, events into the session's log.

The `TurnManager` runs `start_turn` in a background task, so a client that drops the message stream does
not stop the turn; `POST /sessions/{id}/interrupt` cancels that task, and the loop closes the turn itself
(tool results for pending calls, an `error` INTERRUPTED, `state: idle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.approvals.gate import interactive
from server.contract.events import TurnEvent
from server.providers.types import Message
from server.runs.limits import run_max_turns
from server.sessions.agent import AgentLoop, TurnOptions
from server.sessions.events import EventLog
from server.sessions.store import SessionStore
from server.tenancy import Tenant
from server.tools.context import ToolContext


@dataclass
class SessionSink:
    """Events of one session go to its persisted, fanned-out log."""

    events: EventLog
    tenant_id: str
    session_id: str

    async def emit(self, event: TurnEvent) -> None:
        await self.events.last_seq(self.session_id)  # a read only the first time (the direct tool API's sink)
        self.events.append(self.tenant_id, self.session_id, event)


@dataclass
class SessionConversation:
    store: SessionStore
    tenant_id: str
    session_id: str
    history: list[Message]

    async def add(self, message: Message) -> str | None:
        self.history.append(message)
        return await self.store.append_message(self.tenant_id, self.session_id, message.role,
                                               [b.model_dump() for b in message.blocks])


async def load_history(store: SessionStore, tenant_id: str, session_id: str) -> list[Message]:
    return [Message.model_validate({"role": m["role"], "blocks": m["content"]})
            for m in await store.list_messages(tenant_id, session_id)]


class AgentTurnRunner:
    def __init__(self, agent: AgentLoop, store: SessionStore, events: EventLog, *, max_turns: int) -> None:
        self._agent = agent
        self._store = store
        self._events = events
        self._max_turns = max_turns

    def context(self, tenant_id: str, session_id: str) -> ToolContext:
        """A tool context whose events land in the session (also used by the direct tool API)."""

        async def save_todos(todos: list[dict[str, Any]]) -> None:
            await self._store.set_todos(tenant_id, session_id, todos)

        return ToolContext(tenant_id=tenant_id, session_id=session_id,
                           sink=SessionSink(self._events, tenant_id, session_id), save_todos=save_todos)

    async def start_turn(self, tenant: Tenant, session_id: str, user_text: str) -> None:
        session = await self._store.get(tenant.id, session_id)
        conversation = SessionConversation(self._store, tenant.id, session_id,
                                           await load_history(self._store, tenant.id, session_id))
        options = TurnOptions(model=session.model, system_prompt=session.system_prompt,
                              max_turns=run_max_turns(self._max_turns))  # a run's own limit (server/runs)
        with interactive():  # a person can answer this turn's approvals (server/approvals)
            await self._agent.run(self.context(tenant.id, session_id), conversation, options)
