"""A request id on every log line written while a request is served.

``RequestIdMiddleware`` (pure ASGI, the outermost layer) takes the caller's ``X-Request-ID`` when it is a
sane token, else makes one, keeps it in a contextvar for the request's task (and the tasks it starts, which
copy the context), and echoes it in the response's ``X-Request-ID``. The log formatters read the contextvar.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
_SANE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")  # no spaces or quotes: it is echoed and logged as is

current_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(8)


def accept_request_id(value: bytes | None) -> str:
    """The caller's id if it is a short plain token, else a fresh one (a caller cannot inject log text)."""
    if value is not None:
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return new_request_id()
        if _SANE.fullmatch(text):
            return text
    return new_request_id()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = [v for k, v in scope.get("headers") or () if k == HEADER]
        request_id = accept_request_id(given[0] if len(given) == 1 else None)
        token = current_request_id.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers") or () if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)
