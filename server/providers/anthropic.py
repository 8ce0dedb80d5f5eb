"""Anthropic Messages API, streamed (providers ``anthropic`` and ``openanalyst``, which speaks the same wire
format at its own base URL).

The base URL has no ``/v1`` (the SDKs' convention). Tool arguments arrive as ``input_json_delta`` fragments
per content block index and are parsed only at ``content_block_stop``; ``output_tokens`` in ``message_delta``
is cumulative. Errors can arrive inside a 200 stream as ``event: error``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from typing import Any

from server.providers.base import HttpAdapter, classify_words, parse_json_object
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
)

try:
    from _json import scanstring  # CPython's C string scanner: the text-delta hot path
except ImportError:  # pragma: no cover - other interpreters
    from json.decoder import py_scanstring as scanstring  # type: ignore[attr-defined,no-redef]

API_VERSION = "2023-06-01"
THINKING_BUDGET = {"low": 1024, "medium": 4096, "high": 16000, "max": 32000}
_TEXT_DELTA = re.compile(r'\{"type":"content_block_delta","index":\d+,"delta":\{"type":"text_delta","text":"')
_NO_THINKING = re.compile(r"claude-(?:instant|2|3-5|3-haiku|3-sonnet|3-opus)")
_OPUS_4_0 = re.compile(r"claude-opus-4(?:-[01])?(?:-\d{8})?(?:$|-v|:)")


def wire_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        content: list[dict[str, Any]] = []
        for b in m.blocks:
            if isinstance(b, TextBlock):
                content.append({"type": "text", "text": b.text})
            elif isinstance(b, ToolUseBlock):
                content.append({"type": "tool_use", "id": b.id, "name": b.name, "input": b.input})
            else:
                content.append({"type": "tool_result", "tool_use_id": b.tool_use_id, "content": b.content,
                                "is_error": b.is_error})
        out.append({"role": m.role, "content": content})
    return out


def thinking(req: ChatRequest) -> tuple[dict[str, Any], int] | None:
    """(thinking block, max_tokens) for ``req.effort``, or None: no effort, a model without extended
    thinking (Claude 3.5 and older), or mid tool loop. The budget fits under the model's output cap."""
    if not req.effort or _NO_THINKING.search(req.model) or _mid_tool_loop(req.messages):
        return None
    cap = 32_000 if _OPUS_4_0.search(req.model) else 64_000
    budget = min(THINKING_BUDGET[req.effort], cap - 1024)
    max_tokens = req.max_tokens if req.max_tokens > budget else min(cap, budget + req.max_tokens)
    return {"type": "enabled", "budget_tokens": budget}, max_tokens


def _mid_tool_loop(messages: list[Message]) -> bool:
    """Thinking may not be switched on half-way through a tool loop (its blocks are not kept), so only a
    fresh user turn gets it."""
    return bool(messages) and messages[-1].role == "user" and any(
        not isinstance(b, TextBlock) for b in messages[-1].blocks)


def build_body(req: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model, "max_tokens": req.max_tokens, "stream": True,
                            "messages": wire_messages(req.messages)}
    if req.system:
        body["system"] = req.system
    if req.tools:
        body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                         for t in req.tools]
    if (think := thinking(req)) is not None:
        body["thinking"], body["max_tokens"] = think
    return body


class AnthropicAdapter(HttpAdapter):
    """POST {base}/v1/messages with ``stream: true``; x-api-key (or Bearer for an OAuth token)."""

    def headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION, "content-type": "application/json",
                   "accept": "text/event-stream"}
        key = self.credential.api_key or ""
        if self.credential.extra.get("auth_method") == "oauth":
            headers["authorization"] = f"Bearer {key}"
        else:
            headers["x-api-key"] = key
        return headers

    async def stream(self, req: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        async with self._open(f"{self.base_url}/v1/messages", self.headers(), build_body(req)) as resp:
            async for event in self._drive(sse_batches(resp), _Parser(self)):
                yield event


class _Parser:
    """Anthropic SSE events → normalised events (text as plain ``str`` pieces)."""

    def __init__(self, adapter: AnthropicAdapter) -> None:
        self._adapter = adapter
        self.done = False
        self._input_tokens = self._output_tokens = 0
        self._stop_reason = "end_turn"
        self._tools: dict[int, dict[str, Any]] = {}

    def feed(self, item: tuple[str, str]) -> list[StreamEvent | str]:
        name, data = item
        if name == "ping":
            return []
        if (match := _TEXT_DELTA.match(data)) is not None:  # the hot path: most events are text deltas
            try:
                text, end = scanstring(data, match.end())
            except ValueError:
                text, end = "", 0
            if data[end:] == "}}":  # the whole event had exactly this shape, so text is its value
                return [text] if text else []
        try:
            obj = json.loads(data)
        except ValueError:
            raise self._adapter.error("retryable", f"malformed stream event {name!r}") from None
        kind = obj.get("type", name)
        if kind == "content_block_delta":
            delta = obj.get("delta", {})
            dtype = delta.get("type")
            if dtype == "text_delta":
                return [delta["text"]] if delta.get("text") else []
            if dtype == "input_json_delta" and (block := self._tools.get(obj.get("index", -1))) is not None:
                block["json"].append(delta.get("partial_json", ""))
            return []  # thinking_delta / signature_delta: not part of the answer
        if kind == "content_block_start":
            block = obj.get("content_block", {})
            if block.get("type") == "tool_use":
                self._tools[obj.get("index", 0)] = {"id": block.get("id", ""), "name": block.get("name", ""),
                                                    "json": [], "input": block.get("input") or {}}
            elif block.get("type") == "text" and block.get("text"):
                return [block["text"]]
            return []
        if kind == "content_block_stop":
            done = self._tools.pop(obj.get("index", -1), None)
            if done is None:
                return []
            args = parse_json_object("".join(done["json"])) if done["json"] else done["input"]
            if args is None:
                raise self._adapter.error("retryable", f"malformed arguments for tool call {done['name']!r}")
            return [ToolCall(id=done["id"], name=done["name"], arguments=args)]
        if kind == "message_start":
            usage = obj.get("message", {}).get("usage", {})
            self._input_tokens = (int(usage.get("input_tokens") or 0)
                                  + int(usage.get("cache_read_input_tokens") or 0)
                                  + int(usage.get("cache_creation_input_tokens") or 0))
            self._output_tokens = int(usage.get("output_tokens") or 0)
        elif kind == "message_delta":
            self._stop_reason = obj.get("delta", {}).get("stop_reason") or self._stop_reason
            self._output_tokens = int(obj.get("usage", {}).get("output_tokens") or self._output_tokens)
        elif kind == "message_stop":
            self.done = True
            return [Usage(input_tokens=self._input_tokens, output_tokens=self._output_tokens),
                    Stop(reason=self._stop_reason)]
        elif kind == "error":
            err = obj.get("error", {})
            etype, message = str(err.get("type", "error")), str(err.get("message", ""))
            error_kind = classify_words(etype)
            if error_kind == "bad_request" and "credit balance" in message.lower():
                error_kind = "credit"  # Anthropic reports an empty balance as invalid_request_error
            raise self._adapter.error(error_kind, f"{etype}: {message}")
        return []

    def finish(self) -> list[StreamEvent]:
        raise self._adapter.error("retryable", "stream ended before message_stop")
