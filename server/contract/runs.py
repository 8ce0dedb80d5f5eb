"""Response models of the run routes (docs/runs.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from server.contract.common import Model

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]


class RunLimits(Model):
    max_turns: int | None = Field(description="Model turns at most (`TURN_LIMIT` → failed).")
    max_seconds: float | None = Field(description="Wall time at most (→ timed_out).")
    max_cost_usd: float | None = Field(description="Summed model cost at most (`COST_LIMIT` → failed).")


class RunUsage(Model):
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)
    turns: int = Field(ge=0, description="Model turns taken.")


class RunError(Model):
    code: str
    message: str


class Run(Model):
    run_id: str
    status: RunStatus
    session_id: str | None = Field(description="The session the run's turn runs in (made for it when not given).")
    environment: str | None = Field(description="The environment asked for, as given.")
    message: str
    limits: RunLimits
    usage: RunUsage
    answer: str | None = Field(description="The final answer's text, once the run has one.")
    error: RunError | None
    webhook_url: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class RunCreated(Run):
    webhook_secret: str | None = Field(
        description="The secret the webhook is signed with, when the server made it (shown once); null when "
                    "the request gave its own or no webhook.")


class RunList(Model):
    data: list[Run] = Field(description="The tenant's runs, newest first.")


class Delivery(Model):
    attempt: int = Field(ge=1)
    event_id: str = Field(description="The same on every attempt of one outcome (for de-duplication).")
    url: str
    attempted_at: str
    status_code: int | None = Field(description="The receiver's HTTP status, when it answered.")
    error: str | None = Field(description="Why the attempt failed, when it did.")
    duration_ms: float = Field(ge=0)
    succeeded: bool
    next_attempt_at: str | None = Field(description="When the next attempt is due, after a failed one.")


class DeliveryList(Model):
    data: list[Delivery]
