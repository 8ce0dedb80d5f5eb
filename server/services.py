"""Everything a request may need, built once in the app's lifespan and kept on ``app.state.services``.

The foundation builds the store and what lives on it; the integrator fills the optional fields (sandbox
manager, provider router, audit log, agent) in ``open_services`` and closes them in ``Services.close`` —
add a line to each list, nothing else needs to change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.account.service import AccountService
from server.account.tokens import OAuthTokenStore
from server.account.upstream import AccountClient
from server.auth import ApiKeys
from server.providers.registry import credentials_from_env
from server.sessions.events import EventLog
from server.sessions.runner import NoProviderTurnRunner, TurnManager
from server.sessions.store import SessionStore, now_iso
from server.sessions.turn_protocol import TurnRunner
from server.settings import Settings
from server.store.credentials import CredentialStore
from server.store.db import Database
from server.store.secretbox import SecretBox
from server.store.users import UserStore
from server.tenancy import OWNER_ID

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    sessions: SessionStore
    events: EventLog
    turns: TurnManager
    credentials: CredentialStore
    api_keys: ApiKeys
    users: UserStore
    started_monotonic: float = field(default_factory=time.monotonic)
    # --- filled by the integrator (sandbox, providers, audit, agent) ---------------------------------------
    agent: Any = None
    router: Any = None
    sandbox_backend: Any = None
    dispatcher: Any = None
    audit: Any = None
    session_context: Any = None  # (tenant_id, session_id) -> ToolContext, set by server.wiring
    skills: Any = None  # server.skills.catalog.SkillCatalog, set by server.wiring
    files: Any = None  # server.files.service.FilesService, set by server.wiring
    metrics: Any = None  # server.observability.metrics.Metrics, set by create_app
    account: AccountService | None = None  # the OpenAnalyst sign-in (server.account)
    approvals: Any = None  # server.approvals.ApprovalGate, set by server.wiring
    runs: Any = None  # server.runs.RunService, set by server.wiring
    environments: Any = None  # server.environments.EnvironmentService, set by server.wiring
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # run in reverse on close

    def set_turn_runner(self, runner: TurnRunner) -> None:
        """Plug the agent loop in: every later message is answered by ``runner``."""
        self.turns.runner = runner

    async def close(self) -> None:
        """Stop turns, end live streams, run the integrator's closers, commit and close the store."""
        await self.turns.shutdown()
        self.events.close_all()
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception:
                log.exception("a service failed to close")
        self.db.close()


async def open_services(settings: Settings,
                        turn_runner: Callable[[Services], TurnRunner] | None = None) -> Services:
    """Open the store and build the services on it (the lifespan's one call)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.db_path)
    db.open()
    try:
        events = EventLog(db, queue_events=settings.sse_queue_events)
        box = SecretBox(settings.data_dir / "secret.key")
        creds = CredentialStore(db, box, credentials_from_env(settings.provider_env()),
                                share_env=settings.share_env_providers_with_tenants, started_at=now_iso(),
                                aws_region=settings.aws_region)
        services = Services(settings=settings, db=db, sessions=SessionStore(db), events=events,
                            turns=TurnManager(events, NoProviderTurnRunner(events)), credentials=creds,
                            api_keys=ApiKeys(db), users=UserStore(db))
        account_http = httpx.AsyncClient()
        services.closers.append(account_http.aclose)
        services.account = AccountService(AccountClient(settings.account_service_url, account_http),
                                          OAuthTokenStore(db, box), creds, settings.openanalyst_base_url)
        for warning in settings.provider_warnings():
            log.warning(warning)
        await services.users.ensure(OWNER_ID)
        if turn_runner is not None:
            services.set_turn_runner(turn_runner(services))
    except BaseException:
        db.close()
        raise
    return services
