"""OpenAI chat completions, streamed (providers ``openai``, ``xai``, ``openrouter``; also Ollama's ``/v1`` and
any compatible gateway).

Tool calls arrive as fragments keyed by ``index``: id and name in the first, ``arguments`` concatenated across
chunks and parsed once ``finish_reason`` arrives. Usage comes in a last chunk with no choices (asked for with
``stream_options.include_usage``). Gateways add SSE comments and may put ``{"error": ...}`` in the stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from server.providers.base import HttpAdapter, classify_status, classify_words, parse_json_object, sse_events
from server.providers.types import (
    ChatRequest,
    Message,
    ProviderError,
    Stop,
    StreamEvent,
    TextBlock,
    TextDelta,
    ToolCall,
    ToolUseBlock,
    Usage,
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
            async for event in self._events(resp):
                yield event

    def _stream_error(self, err: Any) -> ProviderError:
        if not isinstance(err, dict):
            return self.error("retryable", str(err))
        message = str(err.get("message", ""))
        code = err.get("code")
        if isinstance(code, int) or (isinstance(code, str) and code.isdigit()):
            return self.error(classify_status(int(code), message), message, int(code))
        return self.error(classify_words(f"{err.get('type', '')} {code or ''} {message}"), message)

    async def _events(self, resp: Any) -> AsyncIterator[StreamEvent]:
        usage = Usage()
        finish: str | None = None
        calls: dict[int, dict[str, Any]] = {}
        done = False
        async for _, data in sse_events(resp):
            if data == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                raise self.error("retryable", "malformed stream chunk") from None
            if "error" in chunk:
                raise self._stream_error(chunk["error"])
            if chunk.get("usage"):
                u = chunk["usage"]
                usage = Usage(input_tokens=int(u.get("prompt_tokens") or 0),
                              output_tokens=int(u.get("completion_tokens") or 0))
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield TextDelta(text=delta["content"])
                for frag in delta.get("tool_calls") or []:
                    slot = calls.setdefault(int(frag.get("index", 0)), {"id": "", "name": "", "args": []})
                    fn = frag.get("function") or {}
                    slot["id"] = frag.get("id") or slot["id"]
                    slot["name"] = fn.get("name") or slot["name"]
                    if fn.get("arguments"):
                        slot["args"].append(fn["arguments"])
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                    if finish == "error":
                        raise self.error("retryable", "provider reported an error mid-stream")
                    for index in sorted(calls):
                        yield self._tool_call(index, calls[index])
                    calls.clear()
        if not done and finish is None:
            raise self.error("retryable", "stream ended before finish_reason")
        for index in sorted(calls):
            yield self._tool_call(index, calls[index])
        yield usage
        yield Stop(reason=STOP_REASONS.get(finish or "stop", finish or "end_turn"))

    def _tool_call(self, index: int, slot: dict[str, Any]) -> ToolCall:
        args = parse_json_object("".join(slot["args"]))
        if args is None:
            raise self.error("retryable", f"malformed arguments for tool call {slot['name']!r}")
        return ToolCall(id=slot["id"] or f"call_{index}", name=slot["name"], arguments=args)
