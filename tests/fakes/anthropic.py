"""Fake Anthropic Messages API (also the hosted OpenAnalyst provider): ``POST /v1/messages`` streaming the
documented SSE events in compact JSON, as the API sends them — message_start, ping, content_block_start/delta/
stop (text_delta, input_json_delta fragments), message_delta with cumulative usage, message_stop — and
``event: error`` inside a 200 stream."""

from __future__ import annotations

import json
from typing import Any

from .reply import Reply, ToolPart
from .server import FakeServer, RecordedRequest, Wire

ERRORS = {
    "overloaded": ("overloaded_error", 529),
    "rate_limit": ("rate_limit_error", 429),
    "auth": ("authentication_error", 401),
    "permission": ("permission_error", 403),
    "credit": ("billing_error", 400),
    "bad_request": ("invalid_request_error", 400),
    "server": ("api_error", 500),
}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class AnthropicWire(Wire):
    def start(self, reply: Reply, req: RecordedRequest) -> list[bytes]:
        model = req.json().get("model", "claude-fake") if req.body else "claude-fake"
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": reply.usage[0], "output_tokens": 1},
        }
        return [
            sse("message_start", {"type": "message_start", "message": message}),
            sse("ping", {"type": "ping"}),
        ]

    def text_block(self, index: int, pieces: list[str]) -> list[tuple[bytes, bool]]:
        out = [
            (
                sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                ),
                False,
            )
        ]
        out += [
            (
                sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": p},
                    },
                ),
                True,
            )
            for p in pieces
        ]
        out.append((sse("content_block_stop", {"type": "content_block_stop", "index": index}), False))
        return out

    def tool_block(self, index: int, tool: ToolPart) -> list[tuple[bytes, bool]]:
        out = [
            (
                sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}},
                    },
                ),
                True,
            )
        ]
        out += [
            (
                sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": frag},
                    },
                ),
                False,
            )
            for frag in tool.argument_fragments()
        ]
        out.append((sse("content_block_stop", {"type": "content_block_stop", "index": index}), False))
        return out

    def finish(self, reply: Reply, req: RecordedRequest) -> list[bytes]:
        return [
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": reply.usage[1]},
                },
            ),
            sse("message_stop", {"type": "message_stop"}),
        ]

    def _error(self, reply: Reply) -> dict[str, Any]:
        etype = ERRORS[reply.error_kind or "server"][0]
        return {"type": "error", "error": {"type": etype, "message": reply.error_message}}

    def stream_error(self, reply: Reply) -> bytes:
        return sse("error", self._error(reply))

    def error_response(self, reply: Reply) -> tuple[dict[str, str], bytes]:
        return {"request-id": "req_fake"}, json.dumps(self._error(reply), separators=(",", ":")).encode()


class FakeAnthropic(FakeServer):
    """Point ANTHROPIC_BASE_URL (or OPENANALYST_BASE_URL) at ``base_url``."""

    def __init__(self) -> None:
        super().__init__(AnthropicWire())
