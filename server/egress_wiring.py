"""The server's egress pieces, built once: the proxy (one per server, on its own thread), its per-tenant
sockets, the credential registries, and the two web tools' dependencies (docs/egress.md).

A tenant's rules are its policy's ``egress`` when its mode is ``allowlist``; any other mode gets nothing from
the proxy. Every attempt becomes a ``connection`` record in the tenant's own audit chain (``AuditConnections``),
and the dispatcher's ``CallLedger`` ties attempts to the call that made them and sums them up for its result.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from asyncio import Future
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from policies.model import Policy
from policies.network import EgressRules
from server.audit.log import AuditLog
from server.settings import Settings
from server.tools.context import ToolContext
from server.tools.dispatch import ONESHOT_SESSION
from server.tools.web_fetch import EgressRoute, RouteFor
from server.tools.web_search import SearchBackend, SearxngBackend
from toolrunner.egress import (
    AddressPolicy,
    CredentialRegistry,
    EgressHub,
    EgressProxy,
    SessionKeys,
)
from toolrunner.egress.calls import CallLedger
from toolrunner.egress.credentials import first_attribution
from toolrunner.egress.hub import SOCKET_NAME
from toolrunner.egress.limits import TokenBucket
from toolrunner.egress.records import ConnectionRecord

log = logging.getLogger(__name__)
ONESHOT = ONESHOT_SESSION  # the runner session of a call outside any session


def audited_fields(rec: ConnectionRecord) -> dict[str, object]:
    """The proxy's record as the audit log names it: the runner's throwaway session of a call outside any
    session is no session (and its call is that call, even for a process it left behind); web_fetch's
    token names no session as ``""``."""
    fields = rec.to_dict()
    session = rec.session or None
    if session is not None and session.startswith(ONESHOT):
        fields["call_id"] = rec.call_id or session[len(ONESHOT):]
        session = None
    fields["session"] = session
    return fields


class AuditConnections:
    """The proxy's sink: each attempt to its call's tally and, queued, to the tenant's audit chain. Called on
    the proxy's loop; never blocks (the audit writer thread commits; a record is held only until then).

    ``admit`` is the proxy's hook to fail closed: while ``max_pending`` records of all tenants, or
    ``max_pending_per_tenant`` of this tenant, wait for the writer (a stuck or slow disk, or a tenant flooding
    the proxy), or for ``retry_s`` after a record could not be written (disk full), new connections are refused
    with ``limit: "audit"``. A refusal made while its tenant is held is not queued, whichever check refused it
    (the proxy answers a bad head or credential before it asks ``admit``): the backlog stays bounded and one
    tenant cannot fill the others' share.

    Refused attempts are also recorded one by one only up to ``refusals_per_s`` per tenant (a burst of one
    second's worth): code in a sandbox can refuse itself in a loop far faster (about 800 a second from a
    Python client on two loaded cores, some 2.4 GB of audit log an hour), and the audit disk is everyone's.
    Past that rate the refusal is not queued and the tenant is held for ``retry_s``. Refusals not queued are
    counted in the call's summary and in one log line per hold, not one per attempt."""

    def __init__(self, audit: AuditLog, calls: CallLedger, *, max_pending: int = 10_000,
                 max_pending_per_tenant: int = 1_000, refusals_per_s: float = 50.0, retry_s: float = 1.0) -> None:
        self._audit, self._calls = audit, calls
        self._max_pending, self._max_per_tenant, self._retry_s = max_pending, max_pending_per_tenant, retry_s
        self._refusal_rate = refusals_per_s
        self._pending: dict[str, int] = {}
        self._total = 0
        self._failed_at = -retry_s
        self._refusals: dict[str, TokenBucket] = {}  # tenant -> its budget of refusal records
        self._held_until: dict[str, float] = {}  # tenant -> end of its hold for refusing itself too fast
        self._unrecorded: dict[str, int] = {}  # tenant -> refusals not queued since its last log line

    def admit(self, tenant: str) -> str | None:
        now = time.monotonic()
        if (self._total >= self._max_pending or self._pending.get(tenant, 0) >= self._max_per_tenant
                or now - self._failed_at < self._retry_s or self._held_until.get(tenant, 0.0) > now):
            return "audit"
        return None

    def _keeps_refusal(self, rec: ConnectionRecord) -> bool:
        """Whether a refused attempt is queued (see the class); if not, it is counted and logged once a hold."""
        if rec.limit != "audit" and self.admit(rec.tenant) is None:
            bucket = self._refusals.get(rec.tenant)
            if bucket is None:
                bucket = self._refusals[rec.tenant] = TokenBucket(self._refusal_rate)
            if bucket.available() >= 1:
                bucket.spend(1)
                return True
            self._held_until[rec.tenant] = time.monotonic() + self._retry_s
        unrecorded = self._unrecorded[rec.tenant] = self._unrecorded.get(rec.tenant, 0) + 1
        if unrecorded == 1:
            log.warning("egress: tenant %r's refused attempts are not recorded one by one for now (the audit log "
                        "is not keeping up, or more than %g a second)", rec.tenant, self._refusal_rate)
        return False

    def record(self, rec: ConnectionRecord) -> None:
        self._calls.recorded(rec)
        if rec.decision == "deny" and not self._keeps_refusal(rec):
            return
        unrecorded = self._unrecorded.pop(rec.tenant, 0)
        if unrecorded:
            log.warning("egress: %d refused attempts of tenant %r were not recorded one by one", unrecorded,
                        rec.tenant)
        try:
            done = self._audit.connection(rec.tenant, audited_fields(rec))
        except Exception:  # the log is closed (server stopping): say so, the proxy must go on
            self._failed_at = time.monotonic()
            log.exception("egress: the connection record of %s:%s for tenant %r could not be queued",
                          rec.host, rec.port, rec.tenant)
            return
        self._total += 1
        self._pending[rec.tenant] = self._pending.get(rec.tenant, 0) + 1
        done.add_done_callback(lambda future: self._written(rec.tenant, future))

    def _written(self, tenant: str, done: Future[int]) -> None:
        self._total -= 1
        left = self._pending[tenant] - 1
        if left:
            self._pending[tenant] = left
        else:
            del self._pending[tenant]
        if not done.cancelled() and done.exception() is not None:
            self._failed_at = time.monotonic()
            log.error("egress: a connection record was not written: %s", done.exception())


@dataclass
class Egress:
    proxy: EgressProxy
    hub: EgressHub
    calls: CallLedger
    keys: SessionKeys
    tokens: CredentialRegistry
    policies: Callable[[str], Policy]
    search: SearchBackend | None
    _made_root: Path | None = None

    async def route_for(self, ctx: ToolContext) -> EgressRoute | None:
        """web_fetch's way out for this call: the tenant's socket and a token for the call, or None."""
        if self.policies(ctx.tenant_id).network != "allowlist":
            return None
        token = self.tokens.issue(ctx.tenant_id, ctx.session_id or "", ctx.call_id)
        path = self.hub.ensure(ctx.tenant_id) / SOCKET_NAME
        return EgressRoute(str(path), token, release=lambda: self.tokens.revoke(token))

    def prepare(self, tenant: str) -> tuple[Path, str]:
        """The manager's call for a new allowlist container: its socket directory, and a fresh key (the old
        container's call credentials stop working)."""
        return self.hub.ensure(tenant), self.keys.new_key(tenant).hex()

    def session_closed(self, tenant: str, session: str) -> None:
        """The manager closed a sandbox session: its calls' credentials name nothing any more."""
        self.keys.end_session(tenant, session)

    async def close(self) -> None:
        self.hub.stop()
        if self._made_root is not None:
            shutil.rmtree(self._made_root, ignore_errors=True)


def build_egress(settings: Settings, policies: Callable[[str], Policy], audit: AuditLog) -> Egress:
    def rules_for(tenant: str) -> EgressRules | None:
        policy = policies(tenant)
        return policy.egress if policy.network == "allowlist" else None

    keys, tokens = SessionKeys(), CredentialRegistry()
    calls = CallLedger(keys)
    sink = AuditConnections(audit, calls)
    proxy = EgressProxy(rules_for, sink, addresses=AddressPolicy.from_strings(settings.egress_private_networks),
                        attribute=calls.attribute(first_attribution(keys.attribute, tokens.attribute)),
                        admit=sink.admit)
    made = None
    root = settings.egress_socket_dir
    if root is None:  # outside the data directory, which is never mounted
        root = made = Path(tempfile.mkdtemp(prefix="openanalyst-egress-"))
    search: SearchBackend | None = None
    if settings.web_search_searxng_url:
        key = settings.web_search_api_key.get_secret_value() if settings.web_search_api_key else None
        search = SearxngBackend(settings.web_search_searxng_url, api_key=key)
    try:
        hub = EgressHub(proxy, root / "tenants")
    except ValueError as exc:
        raise SystemExit(f"invalid egress_socket_dir: {exc}") from None
    return Egress(proxy, hub, calls, keys, tokens, policies, search, made)


__all__ = ["Egress", "RouteFor", "build_egress"]
