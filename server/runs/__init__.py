"""Runs for CI: agent jobs started with one request, polled or reported to a signed webhook (docs/runs.md)."""

from server.runs.service import RunService, Webhook
from server.runs.store import RunStore
from server.runs.webhooks import RetryPolicy, WebhookSender, sign

__all__ = ["RetryPolicy", "RunService", "RunStore", "Webhook", "WebhookSender", "sign"]
