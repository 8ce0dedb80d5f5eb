"""Header count and repeated identity headers, refused before any route, key check or tenant lookup.

The memory a request head can take is bounded by the HTTP parser (``server.http11``), which refuses a head
still incomplete past the budget; a head that arrives whole in one socket read (up to 256 KiB) gets past it,
so the exact byte budget is checked here (431 ``HEADERS_TOO_LARGE``), with what h11 does not check at all: how
many header fields there are (431 ``TOO_MANY_HEADERS``), and headers whose repetition is ambiguous about who
is calling. Two ``X-Tenant-ID`` (or ``Authorization``) fields used to let
the first one win silently; a proxy that appends rather than replaces would then act for the client's choice.
They are a 400 ``DUPLICATE_HEADER`` now.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from server.middleware import refuse

SINGLE_VALUED = (b"x-tenant-id", b"authorization", b"content-type", b"content-length")


class HeaderLimitMiddleware:
    def __init__(self, app: ASGIApp, max_headers: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or ())
        if len(headers) > self.max_headers:
            await refuse(send, 431, "TOO_MANY_HEADERS",
                         f"the request has {len(headers)} header fields; the limit is {self.max_headers}")
            return
        size = (len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
                + sum(len(name) + len(value) + 4 for name, value in headers))
        if size > self.max_header_bytes:
            await refuse(send, 431, "HEADERS_TOO_LARGE", f"the request line and headers are larger than the "
                                                         f"limit of {self.max_header_bytes} bytes")
            return
        seen: set[bytes] = set()
        for name, _ in headers:
            lower = name.lower()
            if lower in SINGLE_VALUED:
                if lower in seen:
                    await refuse(send, 400, "DUPLICATE_HEADER",
                                 f"the {lower.decode('latin-1')} header is given more than once; send it once")
                    return
                seen.add(lower)
        await self.app(scope, receive, send)
