"""``create_app(settings)``: the FastAPI application, with no module globals (tests build their own)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
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
from server.services import Services, open_services
from server.sessions.turn_protocol import TurnRunner
from server.settings import Settings


def create_app(settings: Settings | None = None, *,
               turn_runner: Callable[[Services], TurnRunner] | None = None,
               wire: Callable[[Services], Awaitable[None]] | None = None) -> FastAPI:
    """The app; its lifespan opens the store and services (``app.state.services``), then lets ``wire`` add
    the sandbox, providers, audit and agent (``server.wiring.wire``), and closes everything at the end."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await open_services(settings, turn_runner)
        services.metrics = app.state.metrics
        app.state.services = services
        try:
            if wire is not None:
                await wire(services)
            yield
        finally:
            await services.close()

    app = FastAPI(title="OpenAnalyst server", version=VERSION, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.metrics = Metrics()
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
    app.add_middleware(HttpMetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestIdMiddleware)  # outermost: every line logged for a request carries its id
    return app
