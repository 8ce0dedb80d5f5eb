"""HTTP request count and latency by route template, as a pure ASGI middleware.

The route is read from the ASGI scope after routing (``scope["route"].path``: ``/sessions/{session_id}``,
never the raw path), so labels stay bounded whatever paths clients invent; a request that matched no route
is ``unmatched``. A response of type ``text/event-stream`` counts as an open SSE stream until it ends.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.observability.metrics import Metrics


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = self.metrics
        started = time.perf_counter()
        status = 500
        stream_route: str | None = None

        async def observe(message: Message) -> None:
            nonlocal status, stream_route
            if message["type"] == "http.response.start":
                status = int(message["status"])
                ctype = dict(message.get("headers") or ()).get(b"content-type", b"")
                if ctype.startswith(b"text/event-stream"):
                    stream_route = route_of(scope)
                    m.sse_streams.labels(stream_route).inc()
            await send(message)

        m.http_in_progress.inc()
        try:
            await self.app(scope, receive, observe)
        finally:
            m.http_in_progress.dec()
            if stream_route is not None:
                m.sse_streams.labels(stream_route).dec()
            method = str(scope.get("method", "GET"))
            route = route_of(scope)
            m.http_requests.labels(method, route, str(status)).inc()
            m.http_duration.labels(method, route).observe(time.perf_counter() - started)
