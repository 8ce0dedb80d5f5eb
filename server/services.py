"""Everything a request may need, built once in the app's lifespan (``server.app.build_app``).

``open_foundation`` opens the store and builds the ``Foundation`` on it; ``server.wiring.wire`` builds the
integration (audit log, provider router, sandbox, dispatcher, agent, …) on that and returns ``Services``, in
which every part is there and typed. Routes reach them through the typed dependencies of ``server.api.deps``.
Closers registered by either half run in reverse on ``close``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields

import httpx

from server.account.service import AccountService
from server.account.tokens import OAuthTokenStore
from server.account.upstream import AccountClient
from server.approvals.gate import ApprovalGate
from server.audit.log import AuditLog
from server.auth import ApiKeys
from server.environments.service import EnvironmentService
from server.files.service import FilesService
from server.observability.metrics import Metrics
from server.providers.failover import ProviderRouter
from server.providers.registry import credentials_from_env
from server.runs.service import RunService
from server.sessions.agent import AgentLoop
from server.sessions.events import EventLog
from server.sessions.runner import NoProviderTurnRunner, TurnManager
from server.sessions.store import SessionStore, now_iso
from server.sessions.turn_protocol import TurnRunner
from server.settings import Settings
from server.skills.catalog import SkillCatalog
from server.store.credentials import CredentialStore
from server.store.open import make_store
from server.store.secretbox import SecretBox
from server.store.store import Store
from server.store.users import UserStore
from server.tenancy import OWNER_ID
from server.tools.context import ToolContext
from server.tools.dispatch import ToolDispatcher
from server.tools.sandbox_backend import SandboxBackend

log = logging.getLogger(__name__)


@dataclass
class Foundation:
    """The store and what lives on it: what ``server.wiring.wire`` builds the rest of the server on."""

    settings: Settings
    db: Store
    sessions: SessionStore
    events: EventLog
    turns: TurnManager
    credentials: CredentialStore
    api_keys: ApiKeys
    users: UserStore
    metrics: Metrics
    account: AccountService
    started_monotonic: float = field(default_factory=time.monotonic)
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
        await self.db.close()


@dataclass(kw_only=True)
class Services(Foundation):
    """The fully wired server (``server.wiring.wire``): the foundation plus the integration, every part typed."""

    audit: AuditLog
    router: ProviderRouter
    sandbox_backend: SandboxBackend
    dispatcher: ToolDispatcher
    agent: AgentLoop
    session_context: Callable[[str, str], ToolContext]  # (tenant_id, session_id) -> a session turn's context
    skills: SkillCatalog
    files: FilesService
    approvals: ApprovalGate
    runs: RunService
    environments: EnvironmentService

    @classmethod
    def on(cls, foundation: Foundation, **parts: object) -> Services:
        """The foundation's own objects (its closers list included) with the integration's ``parts``."""
        own = {f.name: getattr(foundation, f.name) for f in fields(Foundation)}
        return cls(**own, **parts)  # type: ignore[arg-type]


async def open_foundation(settings: Settings, metrics: Metrics) -> Foundation:
    """Open the store and build the foundation's services on it (``server.wiring.wire`` adds the rest)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = make_store(settings)
    await db.open()
    try:
        events = EventLog(db, queue_events=settings.sse_queue_events)
        box = SecretBox(settings.data_dir / "secret.key")
        creds = CredentialStore(db, box, credentials_from_env(settings.provider_env()),
                                share_env=settings.share_env_providers_with_tenants, started_at=now_iso(),
                                aws_region=settings.aws_region)
        account_http = httpx.AsyncClient()
        account = AccountService(AccountClient(settings.account_service_url, account_http),
                                 OAuthTokenStore(db, box), creds, settings.openanalyst_base_url)
        foundation = Foundation(settings=settings, db=db, sessions=SessionStore(db), events=events,
                                turns=TurnManager(events, NoProviderTurnRunner(events)), credentials=creds,
                                api_keys=ApiKeys(db), users=UserStore(db), metrics=metrics, account=account,
                                closers=[account_http.aclose])
        for warning in settings.provider_warnings():
            log.warning(warning)
        await foundation.users.ensure(OWNER_ID)
    except BaseException:
        await db.close()
        raise
    return foundation
