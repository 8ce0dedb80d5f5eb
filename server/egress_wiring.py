"""The server's egress pieces, built once: the proxy (one per server, on its own thread), its per-tenant
sockets, the credential registries, and the two web tools' dependencies (docs/egress.md).

A tenant's rules are its policy's ``egress`` when its mode is ``allowlist``; any other mode gets nothing from
the proxy. Records go to a bounded in-memory sink until the audit log takes them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from policies.model import Policy
from policies.network import EgressRules
from server.settings import Settings
from server.tools.context import ToolContext
from server.tools.web_fetch import EgressRoute, RouteFor
from server.tools.web_search import SearchBackend, SearxngBackend
from toolrunner.egress import (
    AddressPolicy,
    CredentialRegistry,
    EgressHub,
    EgressProxy,
    RecentSink,
    SessionKeys,
)
from toolrunner.egress.credentials import first_attribution
from toolrunner.egress.hub import SOCKET_NAME


@dataclass
class Egress:
    proxy: EgressProxy
    hub: EgressHub
    sink: RecentSink
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
        container's session credentials stop working)."""
        return self.hub.ensure(tenant), self.keys.new_key(tenant).hex()

    async def close(self) -> None:
        self.hub.stop()
        if self._made_root is not None:
            shutil.rmtree(self._made_root, ignore_errors=True)


def build_egress(settings: Settings, policies: Callable[[str], Policy]) -> Egress:
    def rules_for(tenant: str) -> EgressRules | None:
        policy = policies(tenant)
        return policy.egress if policy.network == "allowlist" else None

    sink, keys, tokens = RecentSink(), SessionKeys(), CredentialRegistry()
    proxy = EgressProxy(rules_for, sink, addresses=AddressPolicy.from_strings(settings.egress_private_networks),
                        attribute=first_attribution(keys.attribute, tokens.attribute))
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
    return Egress(proxy, hub, sink, keys, tokens, policies, search, made)


__all__ = ["Egress", "RouteFor", "build_egress"]
