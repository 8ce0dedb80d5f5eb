"""Typed results of the run and approval routes, mirroring the server's OpenAPI schemas (same names, same
fields; ``tests/client/test_client_contract.py`` checks them against the live document)."""

from __future__ import annotations

from typing import Any, Literal

from openanalyst_client.models import Model

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


class RunLimits(Model):
    max_turns: int | None
    max_seconds: float | None
    max_cost_usd: float | None


class RunUsage(Model):
    input_tokens: int
    output_tokens: int
    cost_usd: float
    turns: int


class RunError(Model):
    code: str
    message: str


class Run(Model):
    run_id: str
    status: RunStatus
    session_id: str | None
    environment: str | None
    message: str
    limits: RunLimits
    usage: RunUsage
    answer: str | None
    error: RunError | None
    webhook_url: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


class RunCreated(Run):
    webhook_secret: str | None


class RunList(Model):
    data: list[Run]


class Delivery(Model):
    attempt: int
    event_id: str
    url: str
    attempted_at: str
    status_code: int | None
    error: str | None
    duration_ms: float
    succeeded: bool
    next_attempt_at: str | None


class DeliveryList(Model):
    data: list[Delivery]


class Approval(Model):
    session_id: str
    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    status: Literal["pending", "allowed", "denied", "timed_out", "interrupted", "abandoned"]
    asked_because: str
    created_at: str
    expires_at: str
    decided_at: str | None
    decided_by: str | None
    reason: str | None


class ApprovalList(Model):
    data: list[Approval]
