"""The SSE event contract: one pydantic model per event type, discriminated by ``type``.

Every stream the server writes (a session's ``/events``, a message's answer, a quick chat, a streamed direct
tool call) is built from these models, so an event cannot leave with a wrong shape: the emitting code
constructs a model (mypy checks its fields, pydantic refuses unknown ones) and only ``encode`` turns it into
bytes. On the wire the ``type`` is the SSE ``event:`` line and the rest of the model is the ``data:`` JSON.

Fields declared in a model's ``omit_if_none`` are left out of the data when unset (they only mean something
in some situations, e.g. ``parent_tool_call_id`` of a sub-agent's events); every other field is always sent,
``null`` included.

``tool_call`` and ``tool_result`` name their call ``call_id`` everywhere (as the audit log and the direct tool
API do); their old session-stream key ``id`` is still sent, equal to ``call_id``, deprecated for one release.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, computed_field

from server.providers.types import Block
from toolrunner.results import ChangeReport, Limit, NetworkSummary, ToolError, ToolResult

_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
DEPRECATED_ID = "Deprecated: the same as call_id, sent until the next release."


class _Event(BaseModel):
    """Base of the event models. ``type`` (each model's own default) is the SSE ``event:`` line; it is not
    repeated in ``data:``, so the schemas give it as optional, defaulting to the event's name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    omit_if_none: ClassVar[frozenset[str]] = frozenset({"parent_tool_call_id"})

    parent_tool_call_id: str | None = Field(
        default=None, description="Set on a sub-agent's events: the `agent` tool call that started it.")


class SnapshotEvent(_Event):
    """First event of `GET /sessions/{id}/events` (sent without an `id:`, so Last-Event-ID stays exact)."""

    type: Literal["snapshot"] = "snapshot"
    session_id: str
    title: str | None
    model: str | None
    state: Literal["running", "requires_action", "idle"] = Field(
        description="Whether a turn is running (not the turn's phase); `requires_action`: a call waits for a decision.")
    last_seq: int = Field(ge=0)
    created_at: str


class MessageEvent(_Event):
    """A complete message added to the conversation (`id` is absent where messages are not stored)."""

    omit_if_none: ClassVar[frozenset[str]] = frozenset({"parent_tool_call_id", "id", "kind"})

    type: Literal["message"] = "message"
    id: str | None = None
    role: Literal["user", "assistant"]
    content: list[Block]
    kind: Literal["send_user_message"] | None = None


class AssistantDeltaEvent(_Event):
    """A chunk of the model's text as it streams."""

    type: Literal["assistant_delta"] = "assistant_delta"
    text: str


class ToolCallEvent(_Event):
    """The model (or a direct tool call in a session) started a tool call."""

    type: Literal["tool_call"] = "tool_call"
    call_id: str
    tool_name: str
    arguments: dict[str, Any]

    @computed_field(description=DEPRECATED_ID, json_schema_extra={"deprecated": True})  # type: ignore[prop-decorator]
    @property
    def id(self) -> str:
        return self.call_id


class ToolOutputEvent(_Event):
    """Output of a streamed direct tool call as it is produced (`POST /v1/tools/{name}` with `stream`)."""

    type: Literal["tool_output"] = "tool_output"
    call_id: str
    stream: Literal["stdout", "stderr"]
    data: str


class ToolResultEvent(_Event):
    """How a tool call ended: the ToolResult fields and the call's id."""

    type: Literal["tool_result"] = "tool_result"
    call_id: str
    tool_name: str
    output: str
    exit_code: int | None
    duration_ms: float = Field(ge=0)
    truncated: bool
    timed_out: bool
    limit: Limit | None
    error: ToolError | None
    network: NetworkSummary | None = Field(default=None, description="The call's egress connections (allowlist).")
    changes: ChangeReport | None = Field(default=None, description="The workspace files the call changed.")

    @computed_field(description=DEPRECATED_ID, json_schema_extra={"deprecated": True})  # type: ignore[prop-decorator]
    @property
    def id(self) -> str:
        return self.call_id

    @classmethod
    def of(cls, call_id: str, result: ToolResult, parent_tool_call_id: str | None = None) -> ToolResultEvent:
        # dict(result), not model_dump(): the ToolError instance is kept as is, so a host-made code survives.
        return cls(call_id=call_id, parent_tool_call_id=parent_tool_call_id, **dict(result))


class UsageEvent(_Event):
    """Tokens and cost of one model turn."""

    type: Literal["usage"] = "usage"
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)
    provider: str | None
    model: str | None
    latency_ms: float = Field(ge=0)


class StateEvent(_Event):
    """The turn's phase; every turn ends with `idle` (`interrupted` when it was stopped)."""

    omit_if_none: ClassVar[frozenset[str]] = frozenset({"parent_tool_call_id", "interrupted", "agent"})

    type: Literal["state"] = "state"
    state: Literal["thinking", "tool_use", "requires_action", "idle"]
    interrupted: bool | None = None
    agent: str | None = Field(default=None, description="A sub-agent's description, when one starts.")


class ApprovalRequiredEvent(_Event):
    """A tool call waits for a person's decision (`POST /sessions/{id}/approvals/{call_id}`); docs/approvals.md."""

    type: Literal["approval_required"] = "approval_required"
    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    reason: str = Field(description="Which policy setting asks for this call.")
    expires_at: str = Field(description="When the call is denied without a decision (ISO 8601, UTC).")


class ApprovalDecisionEvent(_Event):
    """How a waiting call was decided: by a person, by its timeout, by an interrupt or a server restart."""

    type: Literal["approval_decision"] = "approval_decision"
    call_id: str
    status: Literal["allowed", "denied", "timed_out", "interrupted", "abandoned"]
    decided_by: str | None = Field(description="The deciding tenant and API key, when a person decided.")
    reason: str | None
    decided_at: str


class EnvironmentBuildProgressEvent(_Event):
    """One line of an environment build's output (fetching, `docker build`, the hardening check)."""

    type: Literal["environment_build_progress"] = "environment_build_progress"
    environment: str
    line: str


class EnvironmentBuildDoneEvent(_Event):
    """The build ended: `ready` with the image, or `failed` with the build's own error (code and text)."""

    type: Literal["environment_build_done"] = "environment_build_done"
    environment: str
    state: Literal["ready", "failed"]
    image: str | None = None
    code: str | None = None
    message: str | None = None


class ProviderFailure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    error: str


class ErrorEvent(_Event):
    """Something went wrong: the error body's fields; `fatal` is false when the turn goes on."""

    omit_if_none: ClassVar[frozenset[str]] = frozenset(
        {"parent_tool_call_id", "provider", "providers", "last_event_id"})

    type: Literal["error"] = "error"
    code: str
    message: str
    status: int = Field(ge=100, le=599)
    fatal: bool = True
    provider: str | None = None
    providers: list[ProviderFailure] | None = None
    last_event_id: int | None = Field(default=None, description="`SUBSCRIBER_TOO_SLOW`: where to resume.")


TurnEvent = Annotated[
    MessageEvent | AssistantDeltaEvent | ToolCallEvent | ToolResultEvent | UsageEvent | StateEvent | ErrorEvent
    | ApprovalRequiredEvent | ApprovalDecisionEvent,
    Field(discriminator="type")]
"""What an agent turn emits (a quick chat's stream: `POST /v1/chat`)."""

SessionEvent = Annotated[
    SnapshotEvent | MessageEvent | AssistantDeltaEvent | ToolCallEvent | ToolResultEvent | UsageEvent
    | StateEvent | ErrorEvent | ApprovalRequiredEvent | ApprovalDecisionEvent,
    Field(discriminator="type")]
"""What a session's streams carry (`GET /sessions/{id}/events`, `POST /sessions/{id}/message`)."""

ToolStreamEvent = Annotated[ToolOutputEvent | ToolResultEvent | ErrorEvent, Field(discriminator="type")]
"""What a streamed direct tool call carries (`POST /v1/tools/{name}` with `"stream": true`)."""

EnvironmentBuildEvent = Annotated[EnvironmentBuildProgressEvent | EnvironmentBuildDoneEvent | ErrorEvent,
                                  Field(discriminator="type")]
"""What an environment's build stream carries (`GET /v1/environments/{name}/build/events`)."""

AnyEvent = (EnvironmentBuildProgressEvent | EnvironmentBuildDoneEvent
            | SnapshotEvent | MessageEvent | AssistantDeltaEvent | ToolCallEvent | ToolOutputEvent
            | ToolResultEvent | UsageEvent | StateEvent | ErrorEvent | ApprovalRequiredEvent | ApprovalDecisionEvent)


def members(union: Any) -> list[type[_Event]]:
    """The event models of one of the unions above, in order."""
    return list(get_args(get_args(union)[0]))


def event_name(model: type[_Event]) -> str:
    name: str = model.model_fields["type"].default
    return name


def event_data(event: AnyEvent) -> dict[str, Any]:
    """The ``data:`` JSON of an event: every field but ``type``, optional ones only when set."""
    data = event.model_dump(mode="json", exclude={"type"})
    for name in event.omit_if_none:
        if data.get(name) is None:
            data.pop(name, None)
    return data


def encode_frame(type: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One SSE frame; JSON escapes newlines, so a single `data:` line always suffices."""
    return frame_of(type, _DUMPS(data), event_id)


def frame_of(type: str, data_json: str, event_id: int | None = None) -> bytes:
    """``encode_frame`` for data already encoded by the same encoder (compact, ``ensure_ascii=False``): a
    session event's JSON is made once, for its SSE frame and its stored row alike."""
    head = f"event: {type}\nid: {event_id}\n" if event_id is not None else f"event: {type}\n"
    return f"{head}data: {data_json}\n\n".encode()


def encode(event: AnyEvent, event_id: int | None = None) -> bytes:
    """The SSE frame of a typed event."""
    return encode_frame(event.type, event_data(event), event_id)
