"""Fake Gemini ``streamGenerateContent?alt=sse``: ``data:`` objects (CRLF-separated, as Google sends them)
with candidates[0].content.parts — text parts streamed, functionCall parts whole — usageMetadata and
finishReason; ``{"error": {code, message, status}}`` in the stream or as an HTTP error body."""

from __future__ import annotations

import json
from typing import Any

from .reply import Reply, ToolPart
from .server import FakeServer, RecordedRequest, Wire

ERRORS = {
    "overloaded": (503, "UNAVAILABLE"),
    "rate_limit": (429, "RESOURCE_EXHAUSTED"),
    "auth": (401, "UNAUTHENTICATED"),
    "permission": (403, "PERMISSION_DENIED"),
    "credit": (429, "RESOURCE_EXHAUSTED"),
    "bad_request": (400, "INVALID_ARGUMENT"),
    "server": (500, "INTERNAL"),
}


def data(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj)}\r\n\r\n".encode()


def parts_chunk(parts: list[dict[str, Any]], **cand: Any) -> bytes:
    return data(
        {
            "candidates": [{"content": {"parts": parts, "role": "model"}, "index": 0, **cand}],
            "modelVersion": "gemini-fake",
        }
    )


class GeminiWire(Wire):
    def text_block(self, index: int, pieces: list[str]) -> list[tuple[bytes, bool]]:
        return [(parts_chunk([{"text": p}]), True) for p in pieces]

    def tool_block(self, index: int, tool: ToolPart) -> list[tuple[bytes, bool]]:
        return [(parts_chunk([{"functionCall": {"name": tool.name, "args": tool.arguments}}]), True)]

    def finish(self, reply: Reply, req: RecordedRequest) -> list[bytes]:
        reason = {"max_tokens": "MAX_TOKENS"}.get(reply.stop_reason, "STOP")
        usage = {
            "promptTokenCount": reply.usage[0],
            "candidatesTokenCount": reply.usage[1],
            "totalTokenCount": sum(reply.usage),
        }
        return [
            data(
                {
                    "candidates": [
                        {
                            "content": {"parts": [{"text": ""}], "role": "model"},
                            "finishReason": reason,
                            "index": 0,
                        }
                    ],
                    "usageMetadata": usage,
                    "modelVersion": "gemini-fake",
                }
            )
        ]

    def _error(self, reply: Reply) -> dict[str, Any]:
        code, status = ERRORS[reply.error_kind or "server"]
        message = reply.error_message + (" (billing: quota exceeded)" if reply.error_kind == "credit" else "")
        return {"error": {"code": code, "message": message, "status": status}}

    def stream_error(self, reply: Reply) -> bytes:
        return data(self._error(reply))

    def error_response(self, reply: Reply) -> tuple[dict[str, str], bytes]:
        return {}, json.dumps(self._error(reply)).encode()


class FakeGemini(FakeServer):
    """Point GEMINI_BASE_URL at ``base_url``."""

    def __init__(self) -> None:
        super().__init__(GeminiWire())
