"""A stored run as the API shows it (``GET /v1/runs/{id}`` and the webhook's ``run``)."""

from __future__ import annotations

from server.contract.runs import Delivery, Run, RunError, RunLimits, RunUsage
from server.runs.store import DeliveryRow, RunRow


def public_run(run: RunRow) -> Run:
    error = None if run.error_code is None else RunError(code=run.error_code, message=run.error_message or "")
    return Run(run_id=run.id, status=run.status, session_id=run.session_id,
               environment=run.environment, message=run.message,
               limits=RunLimits(max_turns=run.limits.get("max_turns"), max_seconds=run.limits.get("max_seconds"),
                                max_cost_usd=run.limits.get("max_cost_usd")),
               usage=RunUsage(input_tokens=run.input_tokens, output_tokens=run.output_tokens,
                              cost_usd=run.cost_usd, turns=run.turns),
               answer=run.answer, error=error, webhook_url=run.webhook_url, created_at=run.created_at,
               started_at=run.started_at, finished_at=run.finished_at)


def public_delivery(row: DeliveryRow) -> Delivery:
    return Delivery(attempt=row.attempt, event_id=row.event_id, url=row.url, attempted_at=row.attempted_at,
                    status_code=row.status_code, error=row.error, duration_ms=row.duration_ms,
                    succeeded=row.succeeded, next_attempt_at=row.next_attempt_at)
