"""Fake Bedrock ``POST /model/{modelId}/converse-stream``: binary event-stream frames (both CRCs right,
encoded by the server's own encoder) — messageStart, contentBlockStart (toolUse), contentBlockDelta (text or
toolUse input fragments), contentBlockStop, messageStop, metadata — and exception frames."""

from __future__ import annotations

import json
from typing import Any

from server.providers.eventstream import encode_message

from .reply import Reply, ToolPart
from .server import FakeServer, RecordedRequest, Wire

EXCEPTIONS = {
    "overloaded": ("serviceUnavailableException", 503),
    "rate_limit": ("throttlingException", 429),
    "auth": ("accessDeniedException", 403),
    "permission": ("accessDeniedException", 403),
    "credit": ("accessDeniedException", 403),
    "bad_request": ("validationException", 400),
    "server": ("modelStreamErrorException", 424),
}


def event(name: str, payload: dict[str, Any]) -> bytes:
    return encode_message(
        {":event-type": name, ":content-type": "application/json", ":message-type": "event"},
        json.dumps({**payload, "p": "abcdefgh"}, separators=(",", ":")).encode(),
    )


class BedrockWire(Wire):
    content_type = "application/vnd.amazon.eventstream"

    def start(self, reply: Reply, req: RecordedRequest) -> list[bytes]:
        return [event("messageStart", {"role": "assistant"})]

    def text_block(self, index: int, pieces: list[str]) -> list[tuple[bytes, bool]]:
        out = [(event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": p}}), True) for p in pieces]
        return [*out, (event("contentBlockStop", {"contentBlockIndex": index}), False)]

    def tool_block(self, index: int, tool: ToolPart) -> list[tuple[bytes, bool]]:
        out = [
            (
                event(
                    "contentBlockStart",
                    {
                        "contentBlockIndex": index,
                        "start": {"toolUse": {"toolUseId": tool.id, "name": tool.name}},
                    },
                ),
                True,
            )
        ]
        out += [
            (
                event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": f}}}),
                False,
            )
            for f in tool.argument_fragments()
        ]
        return [*out, (event("contentBlockStop", {"contentBlockIndex": index}), False)]

    def finish(self, reply: Reply, req: RecordedRequest) -> list[bytes]:
        usage = {
            "inputTokens": reply.usage[0],
            "outputTokens": reply.usage[1],
            "totalTokens": sum(reply.usage),
        }
        return [
            event("messageStop", {"stopReason": reply.stop_reason}),
            event("metadata", {"usage": usage, "metrics": {"latencyMs": 5}}),
        ]

    def stream_error(self, reply: Reply) -> bytes:
        name, _ = EXCEPTIONS[reply.error_kind or "server"]
        return encode_message(
            {":exception-type": name, ":content-type": "application/json", ":message-type": "exception"},
            json.dumps({"message": reply.error_message}, separators=(",", ":")).encode(),
        )

    def error_response(self, reply: Reply) -> tuple[dict[str, str], bytes]:
        name, _ = EXCEPTIONS[reply.error_kind or "server"]
        return {"x-amzn-errortype": name}, json.dumps({"message": reply.error_message}, separators=(",", ":")).encode()


class FakeBedrock(FakeServer):
    """Point BEDROCK_BASE_URL at ``base_url``."""

    def __init__(self) -> None:
        super().__init__(BedrockWire())
