"""Plug runs into a wired server: the service, its guarded webhook client, and the start-up recovery."""

from __future__ import annotations

from server.providers.guarded_http import guarded_client
from server.runs.service import RunService
from server.runs.store import RunStore
from server.runs.webhooks import RetryPolicy, WebhookSender
from server.services import Services
from server.store.secretbox import SecretBox


async def wire_runs(services: Services) -> None:
    settings = services.settings
    # Webhook URLs are tenant-supplied: the same address rule as tenants' provider URLs, at every connection.
    http = guarded_client(settings.provider_url_policy(), max_connections=50)
    services.closers.append(http.aclose)
    store = RunStore(services.db)
    sender = WebhookSender(http, store, RetryPolicy(settings.webhook_max_attempts,
                                                    settings.webhook_retry_first_delay_s))
    prestart = getattr(services.sandbox_backend, "prestart", None)
    runs = RunService(store, services.sessions, services.events, services.turns,
                      SecretBox(settings.data_dir / "secret.key"), sender, prestart,
                      getattr(services, "environments", None), settings.max_active_runs_per_tenant)
    services.runs = runs
    services.closers.append(runs.close)  # after the client's closer in the list: runs stop first
    await runs.recover()
