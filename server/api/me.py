"""The current user and the (not yet implemented) OpenAnalyst account, in its signed-out shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from server.api.deps import ServicesDep, TenantDep

router = APIRouter(tags=["me"])


@router.get("/me")
async def me(tenant: TenantDep, services: ServicesDep) -> dict[str, Any]:
    user = await services.users.ensure(tenant.id)
    return {**user, "is_owner": tenant.is_owner, "tenancy": services.settings.tenancy}


@router.get("/api/ai/account")
async def account(tenant: TenantDep) -> dict[str, Any]:
    """Signed out until the account flow exists: every field null, never an error."""
    return {"signed_in": False, "email": None, "plan": None, "credits": None, "balance": None}


@router.get("/me/auth/status")
async def auth_status(tenant: TenantDep, services: ServicesDep) -> dict[str, Any]:
    creds = await services.credentials.credentials(tenant.id)
    manual = creds.get("openanalyst")
    return {"signed_in": False, "email": None, "expires_at": None, "balance": None,
            "manual_key_present": bool(manual and manual.api_key), "preferred_source": "manual"}
