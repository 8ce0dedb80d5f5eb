"""Google Gemini ``streamGenerateContent`` over SSE.

Text parts stream; ``functionCall`` parts arrive whole and carry no id, so ids are made up here (the tool
result goes back as ``functionResponse`` by name, found from the history). Gemini rejects JSON-schema keys it
does not know, so tool schemas are reduced to the subset it accepts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from server.providers.base import HttpAdapter, classify_status, classify_words
from server.providers.framing import sse_batches
from server.providers.types import (
    ChatRequest,
    Message,
    Stop,
    StreamEvent,
    TextBlock,
    ToolCall,
    ToolUseBlock,
    Usage,
    fallback_call_id,
)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
THINKING_BUDGET = {"low": 1024, "medium": 4096, "high": 16000, "max": 24576}
SCHEMA_KEYS = frozenset({"type", "format", "description", "nullable", "enum", "items", "properties",
                         "required", "minItems", "maxItems", "minimum", "maximum", "anyOf", "minLength",
                         "maxLength", "pattern", "title"})
STOP_REASONS = {"STOP": "end_turn", "MAX_TOKENS": "max_tokens", "SAFETY": "refusal"}


def clean_schema(schema: Any) -> Any:
    """Keep only the JSON-schema keys Gemini accepts (recursively); ``type: [x, "null"]`` → nullable."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "const":
            out["enum"] = [value]
        elif key not in SCHEMA_KEYS:
            continue
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: clean_schema(sub) for name, sub in value.items()}
        elif key in ("items",):
            out[key] = clean_schema(value)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = [clean_schema(v) for v in value]
        elif key == "type" and isinstance(value, list):
            kinds = [v for v in value if v != "null"]
            out["type"] = kinds[0] if kinds else "string"
            if "null" in value:
                out["nullable"] = True
        else:
            out[key] = value
    return out


def wire_contents(messages: list[Message]) -> list[dict[str, Any]]:
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        parts: list[dict[str, Any]] = []
        for b in m.blocks:
            if isinstance(b, TextBlock):
                parts.append({"text": b.text})
            elif isinstance(b, ToolUseBlock):
                names[b.id] = b.name
                parts.append({"functionCall": {"name": b.name, "args": b.input}})
            else:
                key = "error" if b.is_error else "content"
                parts.append({"functionResponse": {"name": names.get(b.tool_use_id, b.tool_use_id),
                                                   "response": {key: b.content}}})
        out.append({"role": "model" if m.role == "assistant" else "user", "parts": parts})
    return out


def build_body(req: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {"maxOutputTokens": req.max_tokens}
    if req.effort and ("2.5" in req.model or "gemini-3" in req.model):
        config["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGET[req.effort]}
    body: dict[str, Any] = {"contents": wire_contents(req.messages), "generationConfig": config}
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": req.system}]}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [
            {"name": t.name, "description": t.description, "parameters": clean_schema(t.input_schema)}
            for t in req.tools]}]
    return body


class GeminiAdapter(HttpAdapter):
    """POST {base}/v1beta/models/{model}:streamGenerateContent?alt=sse with x-goog-api-key."""

    async def stream(self, req: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        url = f"{self.base_url}/v1beta/models/{req.model}:streamGenerateContent?alt=sse"
        headers = {"content-type": "application/json", "x-goog-api-key": self.credential.api_key or ""}
        async with self._open(url, headers, build_body(req)) as resp:
            async for event in self._drive(sse_batches(resp), _Parser(self)):
                yield event


class _Parser:
    """Gemini response chunks → normalised events (text as plain ``str`` pieces)."""

    def __init__(self, adapter: GeminiAdapter) -> None:
        self._adapter = adapter
        self.done = False
        self._usage = Usage()
        self._finish: str | None = None
        self._called = False

    def feed(self, item: tuple[str, str]) -> list[StreamEvent | str]:
        try:
            chunk = json.loads(item[1])
        except ValueError:
            raise self._adapter.error("retryable", "malformed stream chunk") from None
        if isinstance(chunk, list):  # some proxies send the array form
            chunk = chunk[0] if chunk else {}
        if "error" in chunk:
            err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            message = f"{err.get('status', '')}: {err.get('message', '')}".strip(": ")
            code = err.get("code")
            kind = classify_status(code, message) if isinstance(code, int) else classify_words(message)
            raise self._adapter.error(kind, message, code if isinstance(code, int) else None)
        meta = chunk.get("usageMetadata")
        if meta:
            self._usage = Usage(input_tokens=int(meta.get("promptTokenCount") or 0),
                                output_tokens=int(meta.get("candidatesTokenCount") or 0)
                                + int(meta.get("thoughtsTokenCount") or 0))
        out: list[StreamEvent | str] = []
        for cand in (chunk.get("candidates") or [])[:1]:
            for part in (cand.get("content") or {}).get("parts") or []:
                if part.get("thought"):
                    continue
                if part.get("text"):
                    out.append(part["text"])
                elif "functionCall" in part:
                    call = part["functionCall"]
                    self._called = True
                    out.append(ToolCall(id=call.get("id") or fallback_call_id(),
                                        name=call.get("name", ""), arguments=call.get("args") or {}))
            self._finish = cand.get("finishReason") or self._finish
        return out

    def finish(self) -> list[StreamEvent]:
        if self._finish is None:
            raise self._adapter.error("retryable", "stream ended before finishReason")
        reason = "tool_use" if self._called else STOP_REASONS.get(self._finish, self._finish.lower())
        return [self._usage, Stop(reason=reason)]
