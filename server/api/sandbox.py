"""The caller's sandbox container: what it is and how much it uses, and a way to throw it away.

Removing the container never touches the workspace; the next tool call starts a fresh container on it.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from server.api.deps import SandboxDep
from server.contract.openapi import COMMON, errors
from server.contract.sandbox import SandboxInfo
from server.tenancy import TenantDep

router = APIRouter(tags=["sandbox"], responses=errors(*COMMON, 503))


@router.get("/v1/sandbox")
async def sandbox_info(tenant: TenantDep, sandbox: SandboxDep) -> SandboxInfo:
    info = SandboxInfo.model_validate(await sandbox.info(tenant.id))
    if info.engines is not None and not tenant.is_owner:
        info.engines = [engine.public() for engine in info.engines]
    return info


@router.delete("/v1/sandbox", status_code=204)
async def remove_sandbox(tenant: TenantDep, sandbox: SandboxDep) -> Response:
    await sandbox.remove(tenant.id)
    return Response(status_code=204)
