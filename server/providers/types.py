"""The normalised request and stream shared by every provider adapter (docs/design.md §4).

Adapters translate these to and from their wire formats; the agent loop and the router never see a wire
format. Blocks carry a ``type`` tag so that stored messages can be read back into the right block class.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextBlock(_Frozen):
    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(_Frozen):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Frozen):
    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str
    content: str
    is_error: bool = False


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class Message(_Frozen):
    role: Literal["user", "assistant"]
    blocks: list[Block]


class ToolSpec(_Frozen):
    name: str
    description: str
    input_schema: dict[str, Any]


Effort = Literal["low", "medium", "high", "max"]


class ChatRequest(_Frozen):
    """One model turn; ``model`` empty means "each provider's default model"."""

    model: str
    system: str | None = None
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    effort: Effort | None = None
    max_tokens: int = Field(default=8192, gt=0)


# -- stream events ---------------------------------------------------------------------------------------

class TextDelta(_Frozen):
    text: str


class ToolCall(_Frozen):
    id: str
    name: str
    arguments: dict[str, Any]


def fallback_call_id() -> str:
    """An id for a tool call whose provider sent none. It must never repeat: approvals, audit records and
    tool results are matched by call id, and an index-based id (``call_0``) repeats in every turn and in
    every sub-agent, so a decision meant for one call could settle another."""
    return f"call_{secrets.token_hex(8)}"


class Usage(_Frozen):
    input_tokens: int = 0
    output_tokens: int = 0


class Stop(_Frozen):
    reason: str


StreamEvent = TextDelta | ToolCall | Usage | Stop


class Attempt(_Frozen):
    """The router hands the turn to ``provider`` (first try, a retry, or failover)."""

    provider: str
    model: str
    attempt: int = 1


class Discarded(_Frozen):
    """Content already yielded by ``provider`` must be dropped: another provider answers from scratch."""

    provider: str
    reason: str


RouterEvent = StreamEvent | Attempt | Discarded

ErrorKind = Literal["retryable", "auth", "credit", "bad_request", "forbidden"]


class ProviderError(Exception):
    """A provider call failed; ``kind`` tells the router what to do. Messages are redacted before this."""

    def __init__(self, kind: ErrorKind, status: int | None, retry_after: float | None, message: str,
                 provider: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.status = status
        self.retry_after = retry_after
        self.message = message
        self.provider = provider

    def __str__(self) -> str:
        status = f" {self.status}" if self.status is not None else ""
        return f"{self.provider}: {self.kind}{status}: {self.message}"

    def __repr__(self) -> str:
        return (f"ProviderError(kind={self.kind!r}, status={self.status!r}, "
                f"retry_after={self.retry_after!r}, message={self.message!r}, provider={self.provider!r})")
