"""`GET /v1/providers/status`: each provider's breaker state, last error and latency, for the caller's
tenant's credentials (keys never appear)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from server.api.deps import ServicesDep
from server.tenancy import TenantDep

router = APIRouter(tags=["providers"])


@router.get("/v1/providers/status")
async def providers_status(tenant: TenantDep, services: ServicesDep) -> dict[str, Any]:
    statuses = await services.router.status(tenant.id)
    return {"data": [s.model_dump() for s in statuses]}
