"""The OpenAI-compatible routes' answers as models, for the OpenAPI document and to build the answers from,
so the document and what is sent cannot drift (unknown fields are refused, as in ``server.contract``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelInfo(_Model):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = Field(description="The provider serving it (`openanalyst` for `default`).")


class ModelList(_Model):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class FunctionOut(_Model):
    name: str
    arguments: str = Field(description="The arguments as a JSON object in a string, as OpenAI sends them.")


class ToolCallOut(_Model):
    id: str
    type: Literal["function"] = "function"
    function: FunctionOut


class ToolCallDelta(ToolCallOut):
    index: int = Field(ge=0)


class AssistantMessage(_Model):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[ToolCallOut] | None = Field(default=None, description="Present only when the model "
                                                                           "called the client's tools.")


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class Choice(_Model):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class UsageOut(_Model):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class ChatCompletion(_Model):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="The model that answered, as its provider spells it.")
    system_fingerprint: None = None
    choices: list[Choice]
    usage: UsageOut


class Delta(_Model):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(_Model):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(_Model):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[ChunkChoice] = Field(description="Empty in the last chunk, which carries `usage`.")
    usage: UsageOut | None = Field(default=None, description="Only with `stream_options.include_usage`: null "
                                                             "in every chunk but the last.")


def dump(model: BaseModel, *, omit: frozenset[str] = frozenset()) -> dict[str, Any]:
    """JSON-ready dict; fields named in ``omit`` are left out when None (OpenAI omits them)."""
    data = model.model_dump(mode="json")
    return {k: v for k, v in data.items() if not (k in omit and v is None)}
