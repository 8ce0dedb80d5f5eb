"""AWS Bedrock ConverseStream: JSON request, binary event-stream response.

Auth is SigV4 (service ``bedrock``) from an access key pair, or ``Authorization: Bearer`` with a Bedrock API
key. The body is serialised once so that the bytes signed are the bytes sent. The model id goes in the path,
percent-encoded (``:`` in ``...-v1:0``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from server.providers.anthropic import thinking
from server.providers.base import HttpAdapter, classify_words, parse_json_object
from server.providers.eventstream import EventMessage, EventStreamDecoder, EventStreamError
from server.providers.framing import FramingError
from server.providers.sigv4 import sign
from server.providers.types import (
    ChatRequest,
    ErrorKind,
    Message,
    Stop,
    StreamEvent,
    TextBlock,
    ToolCall,
    ToolUseBlock,
    Usage,
)

DEFAULT_REGION = "us-east-1"
RETRYABLE_EXCEPTIONS = ("throttlingexception", "serviceunavailableexception", "modelstreamerrorexception",
                        "internalserverexception", "modelnotreadyexception")


def default_base_url(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def wire_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        content: list[dict[str, Any]] = []
        for b in m.blocks:
            if isinstance(b, TextBlock):
                content.append({"text": b.text})
            elif isinstance(b, ToolUseBlock):
                content.append({"toolUse": {"toolUseId": b.id, "name": b.name, "input": b.input}})
            else:
                content.append({"toolResult": {"toolUseId": b.tool_use_id, "content": [{"text": b.content}],
                                               "status": "error" if b.is_error else "success"}})
        out.append({"role": m.role, "content": content})
    return out


def build_body(req: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": wire_messages(req.messages),
                            "inferenceConfig": {"maxTokens": req.max_tokens}}
    if req.system:
        body["system"] = [{"text": req.system}]
    if req.tools:
        body["toolConfig"] = {"tools": [{"toolSpec": {"name": t.name, "description": t.description,
                                                      "inputSchema": {"json": t.input_schema}}}
                                        for t in req.tools]}
    if "claude" in req.model and (think := thinking(req)) is not None:
        body["additionalModelRequestFields"] = {"thinking": think[0]}
        body["inferenceConfig"]["maxTokens"] = think[1]
    return body


def classify_exception(name: str) -> ErrorKind:
    lowered = name.lower()
    if lowered in RETRYABLE_EXCEPTIONS:
        return "retryable"
    return classify_words(lowered)


class BedrockAdapter(HttpAdapter):
    """POST {base}/model/{modelId}/converse-stream, SigV4- or Bearer-authenticated."""

    def request(self, req: ChatRequest) -> tuple[str, dict[str, str], bytes]:
        url = f"{self.base_url}/model/{quote(req.model, safe='')}/converse-stream"
        body = json.dumps(build_body(req)).encode()
        headers = {"content-type": "application/json", "accept": "application/vnd.amazon.eventstream"}
        extra = self.credential.extra
        if extra.get("auth") == "bearer":
            headers["authorization"] = f"Bearer {self.credential.api_key or ''}"
        else:
            headers.update(sign("POST", url, headers, body, access_key=str(extra.get("access_key_id", "")),
                                secret_key=self.credential.api_key or "",
                                region=str(extra.get("region") or DEFAULT_REGION), service="bedrock",
                                session_token=extra.get("session_token") or None))
        return url, headers, body

    async def stream(self, req: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        url, headers, body = self.request(req)
        async with self._open(url, headers, body) as resp:
            async for event in self._drive(message_batches(resp), _Parser(self)):
                yield event


async def message_batches(resp: httpx.Response) -> AsyncIterator[list[EventMessage]]:
    """Event-stream messages, one list per network read; both CRCs checked."""
    decoder = EventStreamDecoder()
    async for chunk in resp.aiter_bytes():
        try:
            messages = decoder.feed(chunk)
        except EventStreamError as exc:
            raise FramingError(f"corrupt event stream: {exc}") from None
        if messages:
            yield messages
    if decoder.pending:
        raise FramingError(f"event stream cut inside a message ({decoder.pending} bytes left over)")


class _Parser:
    """ConverseStream events → normalised events (text as plain ``str`` pieces)."""

    def __init__(self, adapter: BedrockAdapter) -> None:
        self._adapter = adapter
        self.done = False
        self._usage = Usage()
        self._stop: str | None = None
        self._tools: dict[int, dict[str, Any]] = {}

    def feed(self, msg: EventMessage) -> list[StreamEvent | str]:
        mtype = msg.header(":message-type")
        try:
            payload = json.loads(msg.payload or b"{}")
        except ValueError:
            raise self._adapter.error("retryable", "malformed event payload") from None
        if mtype == "exception":
            name = msg.header(":exception-type")
            raise self._adapter.error(classify_exception(name), f"{name}: {payload.get('message', '')}")
        if mtype == "error":
            code = msg.header(":error-code")
            raise self._adapter.error(classify_exception(code), f"{code}: {msg.header(':error-message')}")
        etype = msg.header(":event-type")
        index = int(payload.get("contentBlockIndex", 0))
        if etype == "contentBlockDelta":
            delta = payload.get("delta", {})
            if delta.get("text"):
                return [delta["text"]]
            if "toolUse" in delta and (slot := self._tools.get(index)) is not None:
                slot["json"].append(delta["toolUse"].get("input", ""))
        elif etype == "contentBlockStart":
            start = payload.get("start", {}).get("toolUse")
            if start:
                self._tools[index] = {"id": start.get("toolUseId", ""), "name": start.get("name", ""), "json": []}
        elif etype == "contentBlockStop":
            done = self._tools.pop(index, None)
            if done is not None:
                args = parse_json_object("".join(done["json"]))
                if args is None:
                    raise self._adapter.error("retryable", f"malformed arguments for tool {done['name']!r}")
                return [ToolCall(id=done["id"], name=done["name"], arguments=args)]
        elif etype == "messageStop":
            self._stop = payload.get("stopReason") or "end_turn"
        elif etype == "metadata":
            u = payload.get("usage", {})
            self._usage = Usage(input_tokens=int(u.get("inputTokens") or 0),
                                output_tokens=int(u.get("outputTokens") or 0))
        return []

    def finish(self) -> list[StreamEvent]:
        """Usage (``metadata``) comes after ``messageStop``, so the answer is complete only at the end."""
        if self._stop is None:
            raise self._adapter.error("retryable", "stream ended before messageStop")
        return [self._usage, Stop(reason=self._stop)]
