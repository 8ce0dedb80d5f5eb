"""Plug runs into a wired server: the service, its guarded webhook client, and the start-up recovery."""

from __future__ import annotations

from server.environments.service import EnvironmentService
from server.providers.guarded_http import guarded_client
from server.runs.service import RunService
from server.runs.store import RunStore
from server.runs.webhooks import RetryPolicy, WebhookSender
from server.services import Foundation
from server.store.secretbox import SecretBox
from server.tools.sandbox_backend import SandboxBackend


async def wire_runs(foundation: Foundation, sandbox: SandboxBackend, environments: EnvironmentService) -> RunService:
    settings = foundation.settings
    # Webhook URLs are tenant-supplied: the same address rule as tenants' provider URLs, at every connection.
    http = guarded_client(settings.provider_url_policy(), max_connections=50)
    foundation.closers.append(http.aclose)
    store = RunStore(foundation.db)
    sender = WebhookSender(http, store, RetryPolicy(settings.webhook_max_attempts,
                                                    settings.webhook_retry_first_delay_s))
    runs = RunService(store, foundation.sessions, foundation.events, foundation.turns,
                      SecretBox(settings.data_dir / "secret.key"), sender, sandbox.prestart,
                      environments, settings.max_active_runs_per_tenant)
    foundation.closers.append(runs.close)  # after the client's closer in the list: runs stop first
    await runs.recover()
    return runs
