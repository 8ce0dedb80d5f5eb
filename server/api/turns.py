"""`POST /sessions/{id}/interrupt`: stop the running turn and any tool call in flight.

The turn closes itself (tool results for the pending calls, an `error` INTERRUPTED, `state: idle`), so the
history stays valid for the next message. Interrupting an idle session is not an error: nothing was running.
"""

from __future__ import annotations

from fastapi import APIRouter

from server.api.deps import ServicesDep
from server.contract.openapi import COMMON, errors
from server.contract.sessions import Interrupted
from server.tenancy import TenantDep

router = APIRouter(tags=["sessions"], responses=errors(*COMMON))


@router.post("/sessions/{session_id}/interrupt", responses=errors(404))
async def interrupt(session_id: str, tenant: TenantDep, services: ServicesDep) -> Interrupted:
    await services.sessions.get(tenant.id, session_id)  # 404 for a missing session, another tenant's included
    running = services.turns.busy(session_id)
    if running:
        await services.turns.cancel(session_id)  # the loop itself records INTERRUPTED and idle
    return Interrupted(session_id=session_id, interrupted=running)
