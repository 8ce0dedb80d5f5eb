"""The current user (the account sign-in is ``server.api.account``)."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.deps import ServicesDep, TenantDep
from server.contract.account import Me
from server.contract.openapi import COMMON, errors

router = APIRouter(tags=["me"], responses=errors(*COMMON))


@router.get("/me")
async def me(tenant: TenantDep, services: ServicesDep) -> Me:
    user = await services.users.ensure(tenant.id)
    # ``tenant`` is the id as the client sent it; rows and directories use its safe name (server.tenant_ids)
    return Me(**{**user, "tenant": tenant.header or user["tenant"]}, is_owner=tenant.is_owner,
              tenancy=services.settings.tenancy)
