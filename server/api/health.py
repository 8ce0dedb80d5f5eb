"""``GET /health``: liveness for load balancers and readiness waits; no authentication."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Request

try:
    VERSION = version("openanalyst-server")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    VERSION = "0.0.0"

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    services = request.app.state.services
    return {"status": "ok", "version": VERSION,
            "uptime_s": round(time.monotonic() - services.started_monotonic, 3)}
