"""OpenAI's chat-completions request body, and its translation to our normalised ``ChatRequest``.

The body accepts what the official SDK sends (unknown sampling parameters are accepted and ignored, since
our adapters do not pass them on); what we cannot honour is refused by name (``n`` > 1, image parts, a tool
message answering no call) rather than silently answered wrongly.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.errors import BadRequest
from server.providers.types import ChatRequest, Message, TextBlock, ToolResultBlock, ToolSpec, ToolUseBlock
from server.sessions.agent import alternating

DEFAULT_MODEL_NAMES = frozenset({"", "default", "openanalyst"})  # each provider's own default model


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionCall(_Open):
    name: str = Field(max_length=200)
    arguments: str = Field(default="", max_length=1_000_000)


class ToolCallIn(_Open):
    id: str = Field(max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessageIn(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = Field(default=None, max_length=200)


class FunctionSpec(_Open):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=100_000)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolIn(_Open):
    type: Literal["function"] = "function"
    function: FunctionSpec


class StreamOptions(_Open):
    include_usage: bool = False


class CompletionBody(_Open):
    """The fields we act on; the rest of OpenAI's parameters are accepted and ignored."""

    model: str = Field(max_length=200)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1)
    tools: list[ToolIn] | None = Field(default=None, max_length=256)
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _text(content: str | list[dict[str, Any]] | None, where: str) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text"}`` parts (other parts refused)."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise BadRequest("UNSUPPORTED_CONTENT", f"{where}: only text content parts are supported here, "
                                                    f"not {str(part.get('type'))[:40]!r}")
        texts.append(part["text"])
    return "\n".join(texts)


def _arguments(call: ToolCallIn) -> dict[str, Any]:
    try:
        value = json.loads(call.function.arguments or "{}")
    except ValueError:
        raise BadRequest("INVALID_TOOL_ARGUMENTS",
                         f"tool call {call.id[:40]!r}: function.arguments is not JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("INVALID_TOOL_ARGUMENTS", f"tool call {call.id[:40]!r}: arguments must be an object")
    return value


def to_chat_request(body: CompletionBody, max_output_tokens: int) -> ChatRequest:
    """Our ``ChatRequest`` for the body: system and developer messages become the system prompt, tool
    messages become tool results of the user turn, consecutive turns of one role are merged."""
    if body.n not in (None, 1):
        raise BadRequest("UNSUPPORTED_PARAMETER", "n: only one choice per request is supported")
    system: list[str] = []
    messages: list[Message] = []
    for i, m in enumerate(body.messages):
        where = f"messages.{i}"
        if m.role in ("system", "developer"):
            system.append(_text(m.content, where))
        elif m.role == "user":
            messages.append(Message(role="user", blocks=[TextBlock(text=_text(m.content, where))]))
        elif m.role == "assistant":
            blocks: list[Any] = []
            if text := _text(m.content, where):
                blocks.append(TextBlock(text=text))
            blocks += [ToolUseBlock(id=c.id, name=c.function.name, input=_arguments(c)) for c in m.tool_calls or []]
            if blocks:
                messages.append(Message(role="assistant", blocks=blocks))
        else:
            if not m.tool_call_id:
                raise BadRequest("INVALID_MESSAGE", f"{where}: a tool message needs tool_call_id")
            messages.append(Message(role="user", blocks=[
                ToolResultBlock(tool_use_id=m.tool_call_id, content=_text(m.content, where))]))
    if not messages:
        raise BadRequest("INVALID_MESSAGE", "messages: at least one user message is needed")
    limit = body.max_completion_tokens or body.max_tokens or max_output_tokens
    effort = {"minimal": "low"}.get(body.reasoning_effort or "", body.reasoning_effort)
    tools = [ToolSpec(name=t.function.name, description=t.function.description,
                      input_schema=t.function.parameters) for t in body.tools or []]
    return ChatRequest(model="" if body.model.strip().lower() in DEFAULT_MODEL_NAMES else body.model.strip(),
                       system="\n\n".join(system) or None, messages=alternating(messages), tools=tools,
                       effort=effort,
                       max_tokens=min(limit, max_output_tokens))
