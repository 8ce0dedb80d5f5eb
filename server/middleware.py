"""Request body limits as a pure ASGI middleware: counts the bytes actually received, then checks the JSON.

``Content-Length`` is checked first (cheap refusal); a chunked or lying body is read up to the limit and
refused with 413 ``PAYLOAD_TOO_LARGE`` the moment it passes it, before the application sees any of it. A whole
body is then scanned, unparsed, for JSON nesting and item count (``server.jsonlimits``): 422 ``JSON_TOO_DEEP``
/ ``JSON_TOO_LARGE`` before any parser can recurse on it. Every route takes JSON, so every body is scanned. A
body within the limits is replayed to the app unchanged, and later ``receive`` calls (disconnect detection for
SSE) go straight through.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError, error_body
from server.jsonlimits import JsonLimits, scan_raw


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, json_limits: JsonLimits | None = None) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.json_limits = json_limits or JsonLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if length is None and not chunked:
            await self.app(scope, receive, send)
            return
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await refuse(send, 400, "BAD_REQUEST", "Content-Length is not a number")
                return
            if declared > self.limit:
                await refuse(send, 413, "PAYLOAD_TOO_LARGE", self._message())
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away before sending the body
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await refuse(send, 413, "PAYLOAD_TOO_LARGE", self._message())
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        try:
            scan_raw(whole, self.json_limits)
        except ApiError as exc:
            await refuse(send, exc.status, exc.code, exc.message)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self) -> str:
        return f"the request body is larger than the limit of {self.limit} bytes"


async def refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message, status)).encode()
    headers: list[Any] = [(b"content-type", b"application/json"),
                          (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
