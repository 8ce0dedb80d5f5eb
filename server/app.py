"""``build_app(settings)``: the one factory of the fully wired FastAPI application, with no module globals.

The same call gives a replica, a test and ``uvicorn --factory server.app:build_app`` (settings from the
environment) the same app: its lifespan opens the store and the foundation's services, then wires the
sandbox, providers, audit log, tool dispatch and agent (``server.wiring.wire``), and closes them at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from server.api import ROUTERS, metrics, openai_compat, skills
from server.api.health import VERSION
from server.contract import openapi
from server.errors import install_handlers
from server.header_limits import HeaderLimitMiddleware
from server.jsonlimits import JsonLimits
from server.middleware import BodyLimitMiddleware
from server.observability.http_metrics import HttpMetricsMiddleware
from server.observability.metrics import Metrics
from server.observability.request_id import RequestIdMiddleware
from server.services import Services, open_foundation
from server.sessions.turn_protocol import TurnRunner
from server.settings import Settings
from server.wiring import wire


def build_app(settings: Settings | None = None, *,
              turn_runner: Callable[[Services], TurnRunner] | None = None) -> FastAPI:
    """The fully wired app; its services are on ``app.state.services`` while the lifespan runs.

    ``turn_runner`` replaces the agent loop as what answers a session's messages (tests script turns with
    it); everything else is wired exactly as in production."""
    settings = settings or Settings()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        foundation = await open_foundation(settings, app_metrics)
        try:
            services = await wire(foundation)
            if turn_runner is not None:
                services.set_turn_runner(turn_runner(services))
            app.state.services = services
            yield
        finally:
            await foundation.close()  # the same closers list as the services'; the store last

    app = FastAPI(title="OpenAnalyst server", version=VERSION, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    install_handlers(app)
    for router in (*ROUTERS, openai_compat.router, metrics.router, skills.router):
        app.include_router(router)
    openapi.install(app, require_api_key=settings.require_api_key, single_tenant=settings.tenancy == "single")
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes,
                       json_limits=JsonLimits(settings.max_json_depth, settings.max_json_items))
    app.add_middleware(HeaderLimitMiddleware, max_headers=settings.max_headers,  # runs before the body limit
                       max_header_bytes=settings.max_header_bytes)
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                       allow_headers=["*"], expose_headers=["*"],
                       allow_credentials="*" not in settings.cors_origins)
    app.add_middleware(HttpMetricsMiddleware, metrics=app_metrics)
    app.add_middleware(RequestIdMiddleware)  # outermost: every line logged for a request carries its id
    return app
