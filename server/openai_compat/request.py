"""OpenAI's chat-completions request body, and its translation to our normalised ``ChatRequest``.

The body accepts what the official SDK sends: unknown sampling parameters are accepted and ignored, since our
adapters do not pass them on. What we cannot honour is refused by the schema itself, so the OpenAPI document
states it (``n`` above 1, content parts other than text, a tool message without ``tool_call_id``). Like
OpenAI, tool-call ``arguments`` that are not a JSON object are accepted (models produce them); they reach
the provider as ``{"raw_arguments": "<the string>"}``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.contract.common import json_integer
from server.providers.types import ChatRequest, Message, TextBlock, ToolResultBlock, ToolSpec, ToolUseBlock
from server.sessions.agent import alternating

DEFAULT_MODEL_NAMES = frozenset({"", "default", "openanalyst"})  # each provider's own default model


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # strict: "5" is not an integer, as documented


class TextPart(_Open):
    type: Literal["text"]
    text: str = Field(max_length=1_000_000)


Content = str | list[TextPart]


class FunctionCall(_Open):
    name: str = Field(max_length=200)
    arguments: str = Field(default="", max_length=1_000_000)


class ToolCallIn(_Open):
    id: str = Field(max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Open):
    role: Literal["system", "developer"]
    content: Content


class UserMessage(_Open):
    role: Literal["user"]
    content: Content


class AssistantMessageIn(_Open):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCallIn] | None = Field(default=None, max_length=256)


class ToolMessage(_Open):
    role: Literal["tool"]
    tool_call_id: str = Field(max_length=200)
    content: Content


ChatMessageIn = Annotated[SystemMessage | UserMessage | AssistantMessageIn | ToolMessage,
                          Field(discriminator="role")]


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

    model: str = Field(max_length=200, description="A model name, or `default` for each provider's default.")
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=1, description="One choice per request only.")

    _integers = field_validator("max_tokens", "max_completion_tokens", "n", mode="before")(json_integer)
    tools: list[ToolIn] | None = Field(default=None, max_length=256)
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _text(content: Content | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(part.text for part in content)


def _arguments(call: ToolCallIn) -> dict[str, Any]:
    try:
        value = json.loads(call.function.arguments or "{}")
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"raw_arguments": call.function.arguments}


def _message(m: SystemMessage | UserMessage | AssistantMessageIn | ToolMessage) -> Message | None:
    if isinstance(m, UserMessage):
        return Message(role="user", blocks=[TextBlock(text=_text(m.content))])
    if isinstance(m, ToolMessage):
        return Message(role="user", blocks=[ToolResultBlock(tool_use_id=m.tool_call_id, content=_text(m.content))])
    assert isinstance(m, AssistantMessageIn)
    blocks: list[Any] = [TextBlock(text=text)] if (text := _text(m.content)) else []
    blocks += [ToolUseBlock(id=c.id, name=c.function.name, input=_arguments(c)) for c in m.tool_calls or []]
    return Message(role="assistant", blocks=blocks) if blocks else None


def to_chat_request(body: CompletionBody, max_output_tokens: int) -> ChatRequest:
    """Our ``ChatRequest``: system and developer messages become the system prompt (or, with nothing else,
    the user's message), tool messages tool results of the user turn, consecutive turns of one role merged."""
    system = [_text(m.content) for m in body.messages if isinstance(m, SystemMessage)]
    messages = [msg for m in body.messages if not isinstance(m, SystemMessage) and (msg := _message(m))]
    if not messages:
        messages, system = [Message(role="user", blocks=[TextBlock(text="\n\n".join(system))])], []
    limit = body.max_completion_tokens or body.max_tokens or max_output_tokens
    effort = {"minimal": "low"}.get(body.reasoning_effort or "", body.reasoning_effort)
    tools = [ToolSpec(name=t.function.name, description=t.function.description,
                      input_schema=t.function.parameters) for t in body.tools or []]
    return ChatRequest(model="" if body.model.strip().lower() in DEFAULT_MODEL_NAMES else body.model.strip(),
                       system="\n\n".join(system) or None, messages=alternating(messages), tools=tools,
                       effort=effort, max_tokens=min(limit, max_output_tokens))
