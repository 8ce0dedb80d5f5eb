"""The current user and the (not yet implemented) OpenAnalyst account, in its signed-out shape."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.deps import ServicesDep, TenantDep
from server.contract.account import Account, AuthStatus, Me
from server.contract.openapi import COMMON, errors

router = APIRouter(tags=["me"], responses=errors(*COMMON))


@router.get("/me")
async def me(tenant: TenantDep, services: ServicesDep) -> Me:
    user = await services.users.ensure(tenant.id)
    return Me(**user, is_owner=tenant.is_owner, tenancy=services.settings.tenancy)


@router.get("/api/ai/account")
async def account(tenant: TenantDep) -> Account:
    """Signed out until the account flow exists: every field null, never an error."""
    return Account(signed_in=False, email=None, plan=None, credits=None, balance=None)


@router.get("/me/auth/status")
async def auth_status(tenant: TenantDep, services: ServicesDep) -> AuthStatus:
    creds = await services.credentials.credentials(tenant.id)
    manual = creds.get("openanalyst")
    return AuthStatus(signed_in=False, email=None, expires_at=None, balance=None,
                      manual_key_present=bool(manual and manual.api_key), preferred_source="manual")
