"""Response models of the direct tool API and the quick chat."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from server.contract.common import Model
from server.errors import ErrorDetail
from toolrunner.results import ChangeReport, Limit, NetworkSummary, ToolError, ToolResult


class ToolInfo(Model):
    name: str
    description: str
    where: Literal["sandbox", "server"] = Field(description="Where the tool runs.")
    input_schema: dict[str, Any] = Field(description="JSON Schema of the tool's input.")
    allowed: bool = Field(description="Whether the caller's policy allows it.")
    available: bool = Field(description="Whether it is offered to the model and can run here: allowed, and the "
                                        "sandbox image or server has what it needs.")
    unavailable_code: Literal["TOOL_DENIED", "TOOL_UNAVAILABLE"] | None = Field(
        description="Why not, when `available` is false: the policy denies it, or it cannot run here (no pwsh in "
                    "the image, no search backend).")
    unavailable_reason: str | None = Field(description="The reason in words, when not available.")


class ToolList(Model):
    data: list[ToolInfo]


class ToolCallAnswer(Model):
    """A direct tool call's result (`"stream": false`); a failed call is a result with `error`, not an HTTP
    error, once it ran."""

    call_id: str
    tool_name: str
    output: str
    exit_code: int | None
    duration_ms: float = Field(ge=0)
    truncated: bool
    timed_out: bool
    limit: Limit | None
    error: ToolError | None
    network: NetworkSummary | None = Field(
        default=None, description="Under network = \"allowlist\": the call's connections through the egress proxy "
                                  "(counts, bytes, up to 8 hosts of each kind); each one's record is in the audit "
                                  "log under this call_id. Null when the call made none.")
    changes: ChangeReport | None = Field(default=None, description="The workspace files the call created, modified "
                                         "or deleted (docs/changes.md); null when the policy turns reports off.")

    @classmethod
    def of(cls, call_id: str, result: ToolResult) -> ToolCallAnswer:
        return cls(call_id=call_id, **dict(result))


class ChatToolCall(Model):
    call_id: str
    id: str = Field(description="Deprecated: the same as call_id, sent until the next release.",
                    json_schema_extra={"deprecated": True})
    tool_name: str
    arguments: dict[str, Any]
    result: ToolResult


class ChatUsage(Model):
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)
    provider: str | None
    model: str | None


class ChatAnswer(Model):
    """A quick chat's answer with `"stream": false`."""

    message: str
    tool_calls: list[ChatToolCall]
    usage: ChatUsage
    structured_output: dict[str, Any] | None = Field(
        default=None, description="Present when the request gave an output_schema and the model answered it.")
    error: ErrorDetail | None = Field(
        default=None, description="Present when the turn stopped early but still answered (TURN_LIMIT).")
