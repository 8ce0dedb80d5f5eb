"""``GET /health``: liveness for load balancers and readiness waits; no authentication, so it shows each engine's
address and state only (the owner's ``GET /v1/sandbox`` has the rest)."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter

from server.api.deps import ServicesDep
from server.contract.account import Health
from server.contract.openapi import errors
from server.contract.sandbox import Engine

try:
    VERSION = version("openanalyst-server")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    VERSION = "0.0.0"

router = APIRouter(tags=["health"], responses=errors(400, 413, 422, 431))


@router.get("/health")
async def health(services: ServicesDep) -> Health:
    reports = await services.sandbox_backend.engines()
    engines = None if reports is None else [Engine.model_validate(report).public() for report in reports]
    return Health(status="ok", version=VERSION, uptime_s=round(time.monotonic() - services.started_monotonic, 3),
                  engines=engines)
