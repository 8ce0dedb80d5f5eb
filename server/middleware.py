"""Request body limits as a pure ASGI middleware: counts the bytes actually received, then checks the JSON.

``Content-Length`` is checked first (cheap refusal); a chunked or lying body is read up to the limit and
refused with 413 ``PAYLOAD_TOO_LARGE`` the moment it passes it, before the application sees any of it. A whole
body is then scanned, unparsed, for JSON nesting and item count (``server.jsonlimits``): 422 ``JSON_TOO_DEEP``
/ ``JSON_TOO_LARGE`` before any parser can recurse on it. Every route takes JSON, so every body is scanned. A
body within the limits is replayed to the app unchanged, and later ``receive`` calls (disconnect detection for
SSE) go straight through.

One exception keeps the audit's promise that every tool call is recorded whatever its input: a tool call
(``POST /v1/tools/...``) over the JSON limits is not refused here, before anyone knows its tenant. Its body is
replaced by an empty one and the refusal (code, message, sha256 of the raw bytes) is put in the request's
state; the route authenticates the tenant, records the refused call and answers the same 422.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError, error_body
from server.jsonlimits import JsonLimits, scan_raw

JSON_REFUSAL = "json_refusal"  # key in the ASGI scope's state: a tool call's body refused by the JSON limits


class JsonRefusal:
    """Why a tool call's body was not parsed, for the route to record (the body itself is never parsed)."""

    __slots__ = ("code", "message", "raw_sha256", "status")

    def __init__(self, code: str, message: str, status: int, raw_sha256: str) -> None:
        self.code, self.message, self.status, self.raw_sha256 = code, message, status, raw_sha256


def _is_tool_call(scope: Scope) -> bool:
    path = scope.get("path", "")
    return scope.get("method") == "POST" and isinstance(path, str) and path.startswith("/v1/tools/")


def _is_file_upload(scope: Scope) -> bool:
    path = scope.get("path", "")
    return scope.get("method") == "PUT" and isinstance(path, str) and path.startswith("/v1/files/")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, json_limits: JsonLimits | None = None) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.json_limits = json_limits or JsonLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_file_upload(scope):  # the files API streams and caps its own body
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
            if not _is_tool_call(scope):
                await refuse(send, exc.status, exc.code, exc.message)
                return
            scope.setdefault("state", {})[JSON_REFUSAL] = JsonRefusal(
                exc.code, exc.message, exc.status, hashlib.sha256(whole).hexdigest())
            whole = b"{}"
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
