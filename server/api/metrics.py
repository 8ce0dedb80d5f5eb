"""``GET /metrics``: Prometheus exposition. Who may read it is ``metrics_access`` (docs/operations.md): by
default only the owner, since the numbers describe every tenant's activity together."""

from __future__ import annotations

from fastapi import APIRouter, Response

from server.api.deps import ServicesDep
from server.contract.openapi import COMMON, errors
from server.errors import Forbidden, NotFound
from server.observability.metrics import CONTENT_TYPE
from server.tenancy import TenantDep

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (owner only by default)",
            responses={200: {"description": "Prometheus text exposition format 0.0.4 (docs/operations.md).",
                             "content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
                       **errors(*COMMON, 403, 404)})
async def metrics(services: ServicesDep, tenant: TenantDep) -> Response:
    access = services.settings.metrics_access
    if access == "off":
        raise NotFound("NOT_FOUND", "metrics are turned off on this server (OPENANALYST_METRICS_ACCESS=off)")
    if access == "owner" and not tenant.is_owner:
        raise Forbidden("METRICS_FORBIDDEN", "only the server's owner may read /metrics "
                                             "(OPENANALYST_METRICS_ACCESS=owner)")
    await services.metrics.refresh(services)
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)
