"""Fake Ollama native ``POST /api/chat``: NDJSON lines with message.content deltas, whole tool_calls with
object arguments and no ids, a final ``done: true`` line with prompt_eval_count/eval_count/done_reason, and
``{"error": "..."}`` lines."""

from __future__ import annotations

import json
from typing import Any

from .reply import Reply, ToolPart
from .server import FakeServer, RecordedRequest, Wire

STATUS_TEXT = {
    "overloaded": "server busy, please try again. maximum pending requests exceeded",
    "rate_limit": "too many requests",
    "bad_request": "invalid request: validation failed",
    "server": "llama runner process has terminated",
    "auth": "unauthorized",
    "permission": "unauthorized",
    "credit": "billing required",
}


def line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def message(content: str, **extra: Any) -> bytes:
    return line(
        {
            "model": "fake",
            "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": content, **extra},
            "done": False,
        }
    )


class OllamaWire(Wire):
    content_type = "application/x-ndjson"

    def text_block(self, index: int, pieces: list[str]) -> list[tuple[bytes, bool]]:
        return [(message(p), True) for p in pieces]

    def tool_block(self, index: int, tool: ToolPart) -> list[tuple[bytes, bool]]:
        call = {"function": {"name": tool.name, "arguments": tool.arguments}}
        return [(message("", tool_calls=[call]), True)]

    def finish(self, reply: Reply, req: RecordedRequest) -> list[bytes]:
        reason = "length" if reply.stop_reason == "max_tokens" else "stop"
        return [
            line(
                {
                    "model": "fake",
                    "created_at": "2026-01-01T00:00:01Z",
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": reason,
                    "total_duration": 1000,
                    "prompt_eval_count": reply.usage[0],
                    "eval_count": reply.usage[1],
                }
            )
        ]

    def stream_error(self, reply: Reply) -> bytes:
        return line({"error": f"{STATUS_TEXT[reply.error_kind or 'server']}: {reply.error_message}"})

    def error_response(self, reply: Reply) -> tuple[dict[str, str], bytes]:
        return {}, json.dumps({"error": reply.error_message}, separators=(",", ":")).encode()


class FakeOllama(FakeServer):
    """Point OLLAMA_HOST at ``base_url``."""

    def __init__(self) -> None:
        super().__init__(OllamaWire())
