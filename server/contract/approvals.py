"""Response models of the approval routes (docs/approvals.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from server.contract.common import Model

ApprovalStatus = Literal["pending", "allowed", "denied", "timed_out", "interrupted", "abandoned"]


class Approval(Model):
    session_id: str
    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    status: ApprovalStatus
    asked_because: str = Field(description="The policy setting that asked for a decision.")
    created_at: str
    expires_at: str = Field(description="When the call is denied without a decision.")
    decided_at: str | None
    decided_by: str | None = Field(description="The deciding tenant and API key id (`tenant (key id)`).")
    reason: str | None = Field(description="The decider's reason (the model sees it on a denial), or why the "
                                           "call ended without a decision.")


class ApprovalList(Model):
    data: list[Approval] = Field(description="The session's approvals, newest first (at most 100).")
