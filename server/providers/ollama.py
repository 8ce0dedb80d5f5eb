"""Ollama's native ``/api/chat``: newline-delimited JSON, no key.

Tool calls come whole with object arguments and no ids (ids are made up here); the last line has
``done: true`` with token counts. ``{"error": "..."}`` lines can appear in the stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from server.providers.base import HttpAdapter, classify_words
from server.providers.framing import line_batches
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

DEFAULT_BASE_URL = "http://127.0.0.1:11434"
THINKING_FAMILIES = ("qwen3", "deepseek-r1", "magistral")
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


def wire_messages(system: str | None, messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    names: dict[str, str] = {}
    for m in messages:
        texts = [b.text for b in m.blocks if isinstance(b, TextBlock)]
        if m.role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
            calls = []
            for b in m.blocks:
                if isinstance(b, ToolUseBlock):
                    names[b.id] = b.name
                    calls.append({"function": {"name": b.name, "arguments": b.input}})
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
            continue
        for b in m.blocks:
            if not isinstance(b, TextBlock | ToolUseBlock):
                out.append({"role": "tool", "tool_name": names.get(b.tool_use_id, ""),
                            "content": f"[error] {b.content}" if b.is_error else b.content})
        if texts:
            out.append({"role": "user", "content": "\n".join(texts)})
    return out


def think_value(model: str, effort: str | None) -> bool | str | None:
    """``think`` only for models that support it (others reject it)."""
    if not effort:
        return None
    name = model.lower()
    if name.startswith("gpt-oss"):
        return "high" if effort == "max" else effort
    return True if name.startswith(THINKING_FAMILIES) else None


def build_body(req: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model, "stream": True,
                            "messages": wire_messages(req.system, req.messages),
                            "options": {"num_predict": req.max_tokens}}
    if req.tools:
        body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                            "parameters": t.input_schema}}
                         for t in req.tools]
    think = think_value(req.model, req.effort)
    if think is not None:
        body["think"] = think
    return body


class OllamaAdapter(HttpAdapter):
    """POST {base}/api/chat (base from OLLAMA_HOST, default http://127.0.0.1:11434)."""

    async def stream(self, req: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        headers = {"content-type": "application/json"}
        if self.credential.api_key:  # a proxy in front of Ollama may want one
            headers["authorization"] = f"Bearer {self.credential.api_key}"
        async with self._open(f"{self.base_url}/api/chat", headers, build_body(req)) as resp:
            async for event in self._drive(line_batches(resp), _Parser(self)):
                yield event


class _Parser:
    """Ollama NDJSON lines → normalised events (text as plain ``str`` pieces)."""

    def __init__(self, adapter: OllamaAdapter) -> None:
        self._adapter = adapter
        self.done = False
        self._called = False

    def feed(self, line: str) -> list[StreamEvent | str]:
        try:
            obj = json.loads(line)
        except ValueError:
            raise self._adapter.error("retryable", "malformed stream line") from None
        if "error" in obj:
            message = str(obj["error"])
            raise self._adapter.error(classify_words(message), message)
        msg = obj.get("message") or {}
        out: list[StreamEvent | str] = [msg["content"]] if msg.get("content") else []
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") or {}
            args = fn.get("arguments") or {}
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    raise self._adapter.error("retryable", "malformed tool call arguments") from None
            self._called = True
            out.append(ToolCall(id=call.get("id") or fallback_call_id(), name=fn.get("name", ""),
                                arguments=args if isinstance(args, dict) else {}))
        if obj.get("done"):
            self.done = True
            reason = obj.get("done_reason") or "stop"
            out += [Usage(input_tokens=int(obj.get("prompt_eval_count") or 0),
                          output_tokens=int(obj.get("eval_count") or 0)),
                    Stop(reason="tool_use" if self._called else STOP_REASONS.get(reason, reason))]
        return out

    def finish(self) -> list[StreamEvent]:
        raise self._adapter.error("retryable", "stream ended before done")
