"""The caller's sandbox container: what it is and how much it uses, and a way to throw it away.

Removing the container never touches the workspace; the next tool call starts a fresh container on it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from server.api.deps import SandboxDep
from server.contract.openapi import COMMON, errors
from server.contract.sandbox import SandboxInfo
from server.tenancy import TenantDep

router = APIRouter(tags=["sandbox"], responses=errors(*COMMON, 503))


@router.get("/v1/sandbox")
async def sandbox_info(tenant: TenantDep, sandbox: SandboxDep) -> SandboxInfo:
    info: dict[str, Any] = await sandbox.info(tenant.id)
    return SandboxInfo.model_validate(info)


@router.delete("/v1/sandbox", status_code=204)
async def remove_sandbox(tenant: TenantDep, sandbox: SandboxDep) -> Response:
    await sandbox.remove(tenant.id)
    return Response(status_code=204)
