"""The OpenAnalyst account routes of the spec's Account section (docs/account.md): email + OTP sign-in,
status, logout, the preferred source, and ``/api/ai/account``. The token never leaves the server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from server.account.service import AccountService, Status
from server.api.deps import ServicesDep, TenantDep
from server.contract.account import Account, AuthStatus, Balance, CodeDelivery, OtpChallenge
from server.contract.openapi import COMMON, errors
from server.errors import ServiceUnavailable
from server.services import Services

router = APIRouter(tags=["account"], responses=errors(*COMMON))

EMAIL = r"^[^@\x00-\x20\x7f-\xa0]{1,64}@[^@\x00-\x20\x7f-\xa0]{1,255}$"
# Blanks and control characters spelled out: "\s" differs between the regex engine that validates (pydantic's)
# and the ones clients generate from (hypothesis took U+0085 for a non-space that pydantic then refused).


class OtpStartBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    email: str = Field(pattern=EMAIL, max_length=320)


class OtpVerifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    email: str = Field(pattern=EMAIL, max_length=320)
    code: str = Field(pattern=r"^[0-9]{6}$")
    challenge_id: str = Field(min_length=1, max_length=512)


class PreferredSourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    source: Literal["oauth", "manual"]


def _account(services: Services) -> AccountService:
    account: AccountService | None = getattr(services, "account", None)
    if account is None:
        raise ServiceUnavailable("ACCOUNT_UNAVAILABLE", "the account sign-in is not set up on this server")
    return account


def _status(status: Status) -> AuthStatus:
    expires = (datetime.fromtimestamp(status.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
               if status.expires_at is not None else None)
    return AuthStatus(signed_in=status.signed_in, email=status.email, expires_at=expires,
                      balance=Balance(**status.balance) if status.balance is not None else None,
                      manual_key_present=status.manual_key_present, preferred_source=status.preferred_source)


@router.post("/me/auth/otp/start", responses=errors(502, 503))
async def otp_start(body: OtpStartBody, tenant: TenantDep, services: ServicesDep) -> OtpChallenge:
    """Asks the account service to email a 6-digit code; rate limited → ``rate_limited: true``, nothing sent."""
    challenge = await _account(services).start(body.email)
    limited = challenge.retry_after_s is not None
    delivery = None if limited else CodeDelivery(destination=challenge.destination,
                                                 delivery_medium=challenge.delivery_medium)
    return OtpChallenge(challenge_id=challenge.challenge_id, code_delivery=delivery,
                        expires_at=challenge.expires_at_ms, rate_limited=limited,
                        retry_after_seconds=challenge.retry_after_s)


@router.post("/me/auth/otp/verify", responses=errors(429, 502, 503))
async def otp_verify(body: OtpVerifyBody, tenant: TenantDep, services: ServicesDep) -> AuthStatus:
    """Exchanges the code for a token, stored sealed for this tenant; answers as GET /me/auth/status."""
    return _status(await _account(services).verify(tenant.id, body.email, body.code, body.challenge_id))


@router.get("/me/auth/status", responses=errors(502, 503))
async def auth_status(tenant: TenantDep, services: ServicesDep) -> AuthStatus:
    """Refreshes the token first when it expires within 60 s; a refused refresh signs the tenant out."""
    return _status(await _account(services).status(tenant.id))


@router.post("/me/auth/logout", status_code=204, response_class=Response, responses=errors(503))
async def logout(tenant: TenantDep, services: ServicesDep) -> Response:
    """Wipes the stored OAuth credential; a manual key stays."""
    await _account(services).logout(tenant.id)
    return Response(status_code=204)


@router.put("/me/providers/openanalyst/preferred-source", status_code=204, response_class=Response,
            responses=errors(503))
async def preferred_source(body: PreferredSourceBody, tenant: TenantDep, services: ServicesDep) -> Response:
    """Which of the sign-in and the manual key inference uses when both are there."""
    await _account(services).set_preferred(tenant.id, body.source)
    return Response(status_code=204)


@router.get("/api/ai/account", responses=errors(502, 503))
async def account(tenant: TenantDep, services: ServicesDep) -> Account:
    """Email, plan and credits of the signed-in account; every field null when signed out."""
    status = await _account(services).status(tenant.id)
    balance = status.balance or {}
    credits = balance.get("total_available")
    return Account(signed_in=status.signed_in, email=status.email, plan=balance.get("plan_name"),
                   credits=credits, balance=credits)
