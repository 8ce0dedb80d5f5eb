"""OpenAI chat completions, streamed (providers ``openai``, ``xai``, ``openrouter``; also Ollama's ``/v1`` and
any compatible gateway).

Tool calls arrive as fragments keyed by ``index``: id and name in the first, ``arguments`` concatenated across
chunks and parsed once ``finish_reason`` arrives. Usage comes in a last chunk with no choices (asked for with
``stream_options.include_usage``). Gateways add SSE comments and may put ``{"error": ...}`` in the stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from typing import Any

from server.providers.base import HttpAdapter, classify_status, classify_words, parse_json_object
from server.providers.framing import sse_batches
from server.providers.types import (
    ChatRequest,
    Message,
    ProviderError,
    Stop,
    StreamEvent,
    TextBlock,
    ToolCall,
    ToolUseBlock,
    Usage,
    fallback_call_id,
)

REASONING_MODEL = re.compile(r"^(?:[\w.-]+/)?(?:o1|o3|o4|gpt-5)")
STOP_REASONS = {"stop": "end_turn", "tool_calls": "tool_use", "function_call": "tool_use",
                "length": "max_tokens", "content_filter": "refusal"}


def is_reasoning_model(model: str) -> bool:
    return bool(REASONING_MODEL.match(model))


def wire_messages(system: str | None, messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for m in messages:
        texts = [b.text for b in m.blocks if isinstance(b, TextBlock)]
        if m.role == "assistant":
            calls = [{"id": b.id, "type": "function",
                      "function": {"name": b.name, "arguments": json.dumps(b.input)}}
                     for b in m.blocks if isinstance(b, ToolUseBlock)]
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
            continue
        for b in m.blocks:  # tool results must directly follow the assistant message that asked for them
            if not isinstance(b, TextBlock | ToolUseBlock):
                content = f"[error] {b.content}" if b.is_error else b.content
                out.append({"role": "tool", "tool_call_id": b.tool_use_id, "content": content})
        if texts:
            out.append({"role": "user", "content": "\n".join(texts)})
    return out


def build_body(req: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model, "stream": True, "stream_options": {"include_usage": True},
                            "messages": wire_messages(req.system, req.messages)}
    if is_reasoning_model(req.model):
        body["max_completion_tokens"] = req.max_tokens
        if req.effort:
            body["reasoning_effort"] = "high" if req.effort == "max" else req.effort
    else:
        body["max_tokens"] = req.max_tokens
    if req.tools:
        body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                            "parameters": t.input_schema}}
                         for t in req.tools]
    return body


class OpenAIChatAdapter(HttpAdapter):
    """POST {base}/chat/completions (base ends in /v1) with a Bearer key."""

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if self.credential.api_key:
            headers["authorization"] = f"Bearer {self.credential.api_key}"
        return headers

    async def stream(self, req: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        async with self._open(f"{self.base_url}/chat/completions", self.headers(), build_body(req)) as resp:
            async for event in self._drive(sse_batches(resp), _Parser(self)):
                yield event


class _Parser:
    """Chat-completion chunks → normalised events (text as plain ``str`` pieces)."""

    def __init__(self, adapter: OpenAIChatAdapter) -> None:
        self._adapter = adapter
        self.done = False
        self._usage = Usage()
        self._finish: str | None = None
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, item: tuple[str, str]) -> list[StreamEvent | str]:
        data = item[1]
        if data == "[DONE]":
            self.done = True
            return [*self._closing()]
        try:
            chunk = json.loads(data)
        except ValueError:
            raise self._adapter.error("retryable", "malformed stream chunk") from None
        if "error" in chunk:
            raise self._stream_error(chunk["error"])
        out: list[StreamEvent | str] = []
        if chunk.get("usage"):
            u = chunk["usage"]
            self._usage = Usage(input_tokens=int(u.get("prompt_tokens") or 0),
                                output_tokens=int(u.get("completion_tokens") or 0))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out.append(delta["content"])
            for frag in delta.get("tool_calls") or []:
                slot = self._calls.setdefault(int(frag.get("index", 0)), {"id": "", "name": "", "args": []})
                fn = frag.get("function") or {}
                slot["id"] = frag.get("id") or slot["id"]
                slot["name"] = fn.get("name") or slot["name"]
                if fn.get("arguments"):
                    slot["args"].append(fn["arguments"])
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                if self._finish == "error":
                    raise self._adapter.error("retryable", "provider reported an error mid-stream")
                out.extend(self._tool_calls())
        return out

    def finish(self) -> list[StreamEvent]:
        if self._finish is None:  # gateways may omit [DONE], but never finish_reason
            raise self._adapter.error("retryable", "stream ended before finish_reason")
        return self._closing()

    def _closing(self) -> list[StreamEvent]:
        reason = self._finish or "stop"
        return [*self._tool_calls(), self._usage, Stop(reason=STOP_REASONS.get(reason, reason))]

    def _tool_calls(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for index in sorted(self._calls):
            slot = self._calls[index]
            args = parse_json_object("".join(slot["args"]))
            if args is None:
                raise self._adapter.error("retryable", f"malformed arguments for tool call {slot['name']!r}")
            out.append(ToolCall(id=slot["id"] or fallback_call_id(), name=slot["name"], arguments=args))
        self._calls.clear()
        return out

    def _stream_error(self, err: Any) -> ProviderError:
        if not isinstance(err, dict):
            return self._adapter.error("retryable", str(err))
        message = str(err.get("message", ""))
        code = err.get("code")
        if isinstance(code, int) or (isinstance(code, str) and code.isdigit()):
            return self._adapter.error(classify_status(int(code), message), message, int(code))
        return self._adapter.error(classify_words(f"{err.get('type', '')} {code or ''} {message}"), message)
