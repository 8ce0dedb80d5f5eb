"""SSE events as typed models: one class per event ``type``, as the server's OpenAPI document lists them.

On the wire the event's type is the SSE ``event:`` line and its other fields the ``data:`` JSON;
``parse_event`` puts them together. An event type this client does not know becomes ``UnknownEvent`` rather
than an error, so a newer server's additions do not break an older client's loop. ``seq`` is the SSE ``id:``
(session events only): where a stream resumes from.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from openanalyst_client.models import ChangeReport, ContentBlock, Model, NetworkSummary, ToolError


class Event(Model):
    """Fields every event has; ``seq`` comes from the SSE ``id:`` line, not from the data."""

    type: str
    parent_tool_call_id: str | None = None
    seq: int | None = Field(default=None, exclude=True)


class SnapshotEvent(Event):
    type: Literal["snapshot"] = "snapshot"
    session_id: str
    title: str | None
    model: str | None
    state: Literal["running", "requires_action", "idle"]
    last_seq: int
    created_at: str


class MessageEvent(Event):
    type: Literal["message"] = "message"
    id: str | None = None
    role: Literal["user", "assistant"]
    content: list[ContentBlock]
    kind: str | None = None


class AssistantDeltaEvent(Event):
    type: Literal["assistant_delta"] = "assistant_delta"
    text: str


class ToolCallEvent(Event):
    type: Literal["tool_call"] = "tool_call"
    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    id: str | None = None  # deprecated by the server: the same as call_id


class ToolOutputEvent(Event):
    type: Literal["tool_output"] = "tool_output"
    call_id: str
    stream: Literal["stdout", "stderr"]
    data: str


class ToolResultEvent(Event):
    type: Literal["tool_result"] = "tool_result"
    call_id: str
    tool_name: str
    output: str
    exit_code: int | None
    duration_ms: float
    truncated: bool
    timed_out: bool
    limit: str | None
    error: ToolError | None
    network: NetworkSummary | None = None
    changes: ChangeReport | None = None
    id: str | None = None  # deprecated by the server: the same as call_id


class UsageEvent(Event):
    type: Literal["usage"] = "usage"
    input_tokens: int
    output_tokens: int
    cost_usd: float
    provider: str | None
    model: str | None
    latency_ms: float


class StateEvent(Event):
    type: Literal["state"] = "state"
    state: str
    interrupted: bool | None = None
    agent: str | None = None


class ProviderFailure(Model):
    provider: str
    error: str


class ErrorEvent(Event):
    type: Literal["error"] = "error"
    code: str
    message: str
    status: int
    fatal: bool = True
    provider: str | None = None
    providers: list[ProviderFailure] | None = None
    last_event_id: int | None = None


class ApprovalRequiredEvent(Event):
    """A tool call waits for a decision: answer it with ``client.approvals.approve`` / ``deny``."""

    type: Literal["approval_required"] = "approval_required"
    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    reason: str
    expires_at: str


class ApprovalDecisionEvent(Event):
    type: Literal["approval_decision"] = "approval_decision"
    call_id: str
    status: str
    decided_by: str | None
    reason: str | None
    decided_at: str


class EnvironmentBuildProgressEvent(Event):
    type: Literal["environment_build_progress"] = "environment_build_progress"
    environment: str
    line: str


class EnvironmentBuildDoneEvent(Event):
    type: Literal["environment_build_done"] = "environment_build_done"
    environment: str
    state: Literal["ready", "failed"]
    image: str | None = None
    code: str | None = None
    message: str | None = None


class UnknownEvent(Event):
    """An event type this client version does not know; its fields are kept as extras."""


KnownEvent = Annotated[SnapshotEvent | MessageEvent | AssistantDeltaEvent | ToolCallEvent | ToolOutputEvent
                       | ToolResultEvent | UsageEvent | StateEvent | ErrorEvent | ApprovalRequiredEvent
                       | ApprovalDecisionEvent | EnvironmentBuildProgressEvent | EnvironmentBuildDoneEvent,
                       Field(discriminator="type")]
AnyEvent = (SnapshotEvent | MessageEvent | AssistantDeltaEvent | ToolCallEvent | ToolOutputEvent | ToolResultEvent
            | UsageEvent | StateEvent | ErrorEvent | ApprovalRequiredEvent | ApprovalDecisionEvent
            | EnvironmentBuildProgressEvent | EnvironmentBuildDoneEvent | UnknownEvent)

# The server's unions (OpenAPI `SessionEvent`, `ChatEvent`, `ToolStreamEvent`, `EnvironmentBuildEvent`), by type.
SESSION_EVENTS: dict[str, type[Event]] = {c.model_fields["type"].default: c for c in (
    SnapshotEvent, MessageEvent, AssistantDeltaEvent, ToolCallEvent, ToolResultEvent, UsageEvent, StateEvent,
    ErrorEvent, ApprovalRequiredEvent, ApprovalDecisionEvent)}
CHAT_EVENTS: dict[str, type[Event]] = {k: v for k, v in SESSION_EVENTS.items() if k != "snapshot"}
TOOL_STREAM_EVENTS: dict[str, type[Event]] = {"tool_output": ToolOutputEvent, "tool_result": ToolResultEvent,
                                              "error": ErrorEvent}
ENVIRONMENT_BUILD_EVENTS: dict[str, type[Event]] = {"environment_build_progress": EnvironmentBuildProgressEvent,
                                                    "environment_build_done": EnvironmentBuildDoneEvent,
                                                    "error": ErrorEvent}

_KNOWN: TypeAdapter[Any] = TypeAdapter(KnownEvent)


def parse_event(name: str, data: str, event_id: str | None = None) -> AnyEvent:
    """One event from its SSE ``event:``, ``data:`` and ``id:`` lines."""
    fields = json.loads(data) if data else {}
    if not isinstance(fields, dict):
        fields = {"data": fields}
    fields = {**fields, "type": name}
    seq = int(event_id) if event_id is not None and event_id.isdigit() else None
    if name in SESSION_EVENTS or name in TOOL_STREAM_EVENTS or name in ENVIRONMENT_BUILD_EVENTS:
        event: AnyEvent = _KNOWN.validate_python(fields)
    else:
        event = UnknownEvent.model_validate(fields)
    return event.model_copy(update={"seq": seq}) if seq is not None else event
