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
    return Me(**user, is_owner=tenant.is_owner, tenancy=services.settings.tenancy)
