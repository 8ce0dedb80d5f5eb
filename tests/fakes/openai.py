"""Fake OpenAI chat completions (also xAI, OpenRouter): ``POST /v1/chat/completions`` streaming ``data:``
chunks — content deltas, tool_calls fragments by index (id and name first, arguments split), finish_reason,
a final usage chunk with no choices, ``data: [DONE]`` — plus an OpenRouter-style comment line and
``{"error": ...}`` objects inside a 200 stream."""

from __future__ import annotations

import json
from typing import Any

from .reply import Reply, ToolPart
from .server import FakeServer, RecordedRequest, Wire

ERRORS = {
    "overloaded": (503, "server_error"),
    "rate_limit": (429, "rate_limit_exceeded"),
    "auth": (401, "invalid_api_key"),
    "permission": (403, "permission_denied"),
    "credit": (429, "insufficient_quota"),
    "bad_request": (400, "invalid_request_error"),
    "server": (500, "server_error"),
}


def data(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    return data(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "fake",
            "choices": choices,
            **extra,
        }
    )


class OpenAIWire(Wire):
    def start(self, reply: Reply, req: RecordedRequest) -> list[bytes]:
        return [
            b": OPENROUTER PROCESSING\n\n",
            chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
        ]

    def text_block(self, index: int, pieces: list[str]) -> list[tuple[bytes, bool]]:
        return [(chunk([{"index": 0, "delta": {"content": p}, "finish_reason": None}]), True) for p in pieces]

    def tool_block(self, index: int, tool: ToolPart) -> list[tuple[bytes, bool]]:
        first = {
            "index": index,
            "id": tool.id,
            "type": "function",
            "function": {"name": tool.name, "arguments": ""},
        }
        out = [(chunk([{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}]), True)]
        out += [
            (
                chunk(
                    [
                        {
                            "index": 0,
                            "delta": {"tool_calls": [{"index": index, "function": {"arguments": f}}]},
                            "finish_reason": None,
                        }
                    ]
                ),
                False,
            )
            for f in tool.argument_fragments()
        ]
        return out

    def finish(self, reply: Reply, req: RecordedRequest) -> list[bytes]:
        reason = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}.get(
            reply.stop_reason, reply.stop_reason
        )
        usage = {
            "prompt_tokens": reply.usage[0],
            "completion_tokens": reply.usage[1],
            "total_tokens": sum(reply.usage),
        }
        return [
            chunk([{"index": 0, "delta": {}, "finish_reason": reason}]),
            chunk([], usage=usage),
            b"data: [DONE]\n\n",
        ]

    def stream_error(self, reply: Reply) -> bytes:
        code = ERRORS[reply.error_kind or "server"][0]
        return data({"error": {"code": code, "message": reply.error_message}})

    def error_response(self, reply: Reply) -> tuple[dict[str, str], bytes]:
        _, code = ERRORS[reply.error_kind or "server"]
        body = {"error": {"message": reply.error_message, "type": code, "param": None, "code": code}}
        return {}, json.dumps(body, separators=(",", ":")).encode()


class FakeOpenAI(FakeServer):
    """Point OPENAI_BASE_URL (or XAI_/OPENROUTER_BASE_URL) at ``base_url`` + "/v1"."""

    def __init__(self) -> None:
        super().__init__(OpenAIWire())

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"
