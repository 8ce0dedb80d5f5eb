"""`GET /v1/providers/status`: each provider's breaker state, last error and latency, for the caller's
tenant's credentials (keys never appear).

Breakers are per upstream identity (provider, base URL, credential): a tenant sees the breaker of its own
credential, named by ``breaker_key`` (a salted hash), never another tenant's; tenants on the server's own
credential see the one breaker they share."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.deps import ServicesDep
from server.contract.account import ProviderStatus, ProviderStatusList
from server.contract.openapi import COMMON, errors
from server.tenancy import TenantDep

router = APIRouter(tags=["providers"], responses=errors(*COMMON))


@router.get("/v1/providers/status")
async def providers_status(tenant: TenantDep, services: ServicesDep) -> ProviderStatusList:
    statuses = await services.router.status(tenant.id)
    return ProviderStatusList(data=[ProviderStatus(**s.model_dump()) for s in statuses])
