"""Runs for CI (docs/runs.md): start an agent job and come back for its result, or get it on a webhook.

``POST /v1/runs`` answers 202 at once; ``GET /v1/runs/{id}`` polls it; ``POST /v1/runs/{id}/cancel`` stops
it; ``GET /v1/runs/{id}/deliveries`` shows every webhook attempt.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from server.api.deps import ServicesDep, TenantDep
from server.api.sessions import MessageBody
from server.contract.common import json_integer
from server.contract.openapi import COMMON, errors
from server.contract.runs import DeliveryList, Run, RunCreated, RunList, RunStatus
from server.errors import Unprocessable
from server.providers.urlguard import check_base_url
from server.runs.service import Webhook
from server.runs.views import public_delivery, public_run

router = APIRouter(tags=["runs"], responses=errors(*COMMON))
MAX_RUNS_LISTED = 100


class LimitsBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    max_turns: Annotated[int | None, BeforeValidator(json_integer)] = Field(default=None, ge=1, le=1000)
    max_seconds: float | None = Field(default=None, gt=0, le=86_400)
    max_cost_usd: float | None = Field(default=None, ge=0, le=100_000)


class WebhookBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(min_length=1, max_length=2000, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[!-~]+$",
                     description="http(s); its host must resolve to addresses the owner allows for tenant-given "
                                 "URLs (else 422 WEBHOOK_URL_REFUSED).")
    secret: str | None = Field(default=None, min_length=16, max_length=256,
                               description="Signs the deliveries; absent: the server makes one (answered once).")


class RunBody(MessageBody):  # the message as a session message takes it, and the run's settings
    session_id: str | None = Field(default=None, max_length=100, description="Absent: a new session.")
    environment: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                                    description="The environment to run in (stored; see docs/runs.md).")
    limits: LimitsBody = Field(default_factory=LimitsBody)
    webhook: WebhookBody | None = None


async def _checked_webhook(body: WebhookBody | None, services: ServicesDep) -> tuple[Webhook | None, str | None]:
    """The webhook with its secret (made here when none was given), after the outbound-URL rule."""
    if body is None:
        return None, None
    try:
        await check_base_url(body.url, services.settings.provider_url_policy())
    except Unprocessable as exc:  # a host that does not resolve, or resolves where tenants may not go
        raise Unprocessable("WEBHOOK_URL_REFUSED", exc.message.replace("provider URL", "webhook URL")) from None
    made = None if body.secret is not None else "whsec_" + secrets.token_urlsafe(24)
    return Webhook(body.url, body.secret or made or ""), made


@router.post("/v1/runs", status_code=202, responses=errors(404, 409, 429))
async def create_run(body: RunBody, tenant: TenantDep, services: ServicesDep) -> RunCreated:
    """Start an agent job; answers at once with its id (poll it, or wait for the webhook)."""
    webhook, made_secret = await _checked_webhook(body.webhook, services)
    run = await services.runs.create(tenant, body.message, body.session_id, body.environment,
                                     body.limits.model_dump(), webhook)
    return RunCreated(**public_run(run).model_dump(), webhook_secret=made_secret)


@router.get("/v1/runs")
async def list_runs(tenant: TenantDep, services: ServicesDep, status: RunStatus | None = None,
                    limit: int = Query(default=50, ge=1, le=MAX_RUNS_LISTED)) -> RunList:
    return RunList(data=[public_run(r) for r in await services.runs.store.page(tenant.id, limit, status)])


@router.get("/v1/runs/{run_id}", responses=errors(404))
async def get_run(run_id: str, tenant: TenantDep, services: ServicesDep) -> Run:
    return public_run(await services.runs.store.get(tenant.id, run_id))


@router.post("/v1/runs/{run_id}/cancel", responses=errors(404))
async def cancel_run(run_id: str, tenant: TenantDep, services: ServicesDep) -> Run:
    """Stop a queued or running run; a run that has already ended is answered as it ended (idempotent)."""
    return public_run(await services.runs.cancel(tenant.id, run_id))


@router.get("/v1/runs/{run_id}/deliveries", responses=errors(404))
async def list_deliveries(run_id: str, tenant: TenantDep, services: ServicesDep) -> DeliveryList:
    run = await services.runs.store.get(tenant.id, run_id)
    return DeliveryList(data=[public_delivery(d) for d in await services.runs.store.deliveries(run.id)])
