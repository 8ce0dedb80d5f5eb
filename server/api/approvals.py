"""Approvals: a person's decision on a tool call that waits in a session's turn (docs/approvals.md).

``POST /sessions/{id}/approvals/{call_id}`` resumes the call (``allow``) or refuses it (``deny``, the reason
goes to the model); the decision, the deciding tenant and API key, and the time go to the audit log.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from server.api.deps import ServicesDep, TenantDep
from server.approvals.store import ApprovalRow
from server.auth import PREFIX
from server.contract.approvals import Approval, ApprovalList
from server.contract.openapi import COMMON, errors

router = APIRouter(tags=["approvals"], responses=errors(*COMMON))
CallId = Path(min_length=1, max_length=200)


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    decision: Literal["allow", "deny"]
    reason: str | None = Field(default=None, max_length=2000, description="Shown to the model on a denial.")


def _public(row: ApprovalRow) -> Approval:
    return Approval(session_id=row.session_id, call_id=row.call_id, tool_name=row.tool, arguments=row.arguments,
                    status=row.status, asked_because=row.reason_asked,
                    created_at=row.created_at, expires_at=row.expires_at, decided_at=row.decided_at,
                    decided_by=row.decided_by(), reason=row.reason)


def _key_id(request: Request, services: ServicesDep) -> str | None:
    """The id of the API key that authenticated this request (``oak_<id>_<secret>``), when keys are used."""
    if not services.settings.require_api_key:
        return None
    token = (request.headers.get("authorization") or "").partition(" ")[2].strip()
    return token[len(PREFIX):].partition("_")[0] or None if token.startswith(PREFIX) else None


@router.post("/sessions/{session_id}/approvals/{call_id}", responses=errors(404, 409))
async def decide(session_id: str, body: DecisionBody, tenant: TenantDep, services: ServicesDep, request: Request,
                 call_id: str = CallId) -> Approval:
    """Allow or deny a waiting call: 409 ``APPROVAL_ALREADY_DECIDED`` for a second decision, 404 for a call
    that never waited here (or another tenant's session)."""
    await services.sessions.get(tenant.id, session_id)
    row = await services.approvals.decide(tenant.id, session_id, call_id, body.decision, body.reason,
                                    _key_id(request, services))
    return _public(row)


@router.get("/sessions/{session_id}/approvals", responses=errors(404))
async def list_approvals(session_id: str, tenant: TenantDep, services: ServicesDep) -> ApprovalList:
    await services.sessions.get(tenant.id, session_id)
    return ApprovalList(data=[_public(r) for r in await services.approvals.store.for_session(tenant.id, session_id)])
