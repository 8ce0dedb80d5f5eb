"""Response models of the session routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from server.contract.common import Model, PageMeta
from server.providers.types import Block
from server.tools.builtin import TodoItem


class Session(Model):
    session_id: str
    title: str | None
    model: str | None
    system_prompt: str | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    environment: str | None = Field(default=None, description="The environment its tool calls run in (null: "
                                                              "the tenant's default).")


class SessionSummary(Session):
    state: Literal["running", "requires_action", "idle"] = Field(
        description="Whether a turn is running; `requires_action` while one of its tool calls waits for a "
                    "decision (`POST /sessions/{id}/approvals/{call_id}`).")


class SessionPage(Model):
    data: list[SessionSummary]
    meta: PageMeta


class StoredMessage(Model):
    id: str
    role: Literal["user", "assistant"]
    content: list[Block]
    created_at: str


class SessionDetail(SessionSummary):
    last_seq: int = Field(ge=0, description="Seq of the session's last event (resume with Last-Event-ID).")
    messages: list[StoredMessage]
    todos: list[TodoItem]


class Interrupted(Model):
    session_id: str
    interrupted: bool = Field(description="Whether a turn was running (and is now stopped).")
