"""Circuit breakers per upstream identity: provider + where the requests go + whose credential they carry.

One tenant's failing gateway opens only the breaker of its own (base URL, key); tenants that share the
server's own credential share its breaker, since that is one upstream. The key is ``provider:`` + 16 hex
digits of an HMAC-SHA256, under a random per-process salt, of the base URL and every credential value — so
neither the key nor a guessable hash of it appears in logs, metrics or ``GET /v1/providers/status``.

The table is bounded: entries idle longer than ``idle_ttl_s`` go first, then the least recently used quiet
ones (closed, no failures, no rejected key), then the least recently used, so a tenant inventing base URLs
cannot grow it without limit.

A shared breaker's last error and time to first token are kept per tenant (``TenantView``, at most
``MAX_TENANT_VIEWS`` per entry, least recently noted dropped first): an upstream error quotes the prompt that
caused it, so tenants on the server's credential share the breaker's state but not each other's messages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections import OrderedDict
from collections.abc import Callable

from server.providers.breaker import BreakerConfig, CircuitBreaker
from server.providers.credentials import ProviderCredential

DEFAULT_MAX_ENTRIES = 1024
DEFAULT_IDLE_TTL_S = 3600.0


MAX_TENANT_VIEWS = 256


class TenantView:
    """What one tenant's own requests through a breaker last saw."""

    __slots__ = ("last_error", "last_latency_ms")

    def __init__(self) -> None:
        self.last_error: str | None = None
        self.last_latency_ms: float | None = None


class BreakerEntry:
    """A breaker and, per tenant, what the status route shows next to it."""

    def __init__(self, breaker: CircuitBreaker, now: float) -> None:
        self.breaker = breaker
        self.last_used = now
        self._views: OrderedDict[str, TenantView] = OrderedDict()

    def view(self, tenant_id: str) -> TenantView:
        """This tenant's view, made (and the oldest dropped past ``MAX_TENANT_VIEWS``) if new."""
        found = self._views.get(tenant_id)
        if found is None:
            found = self._views[tenant_id] = TenantView()
            while len(self._views) > MAX_TENANT_VIEWS:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(tenant_id)
        return found

    def peek_view(self, tenant_id: str) -> TenantView | None:
        """This tenant's view if it has one (the status route must not create any)."""
        return self._views.get(tenant_id)

    def quiet(self) -> bool:
        """Nothing would be lost by forgetting it."""
        b = self.breaker
        return b.state == "closed" and b.consecutive_failures == 0 and not b.has_rejected_keys


class BreakerTable:
    def __init__(self, config: BreakerConfig, clock: Callable[[], float], *,
                 max_entries: int = DEFAULT_MAX_ENTRIES, idle_ttl_s: float = DEFAULT_IDLE_TTL_S) -> None:
        self._config = config
        self._clock = clock
        self._max = max(1, max_entries)
        self._ttl = idle_ttl_s
        self._salt = secrets.token_bytes(32)
        self._entries: OrderedDict[str, BreakerEntry] = OrderedDict()

    def key(self, provider: str, base_url: str, credential: ProviderCredential) -> str:
        """``provider:<16 hex>``, the same for the same (base URL, credential) within this process."""
        material = json.dumps([provider, base_url.rstrip("/"), credential.api_key or "",
                               sorted((k, str(v)) for k, v in credential.extra.items())])
        digest = hmac.new(self._salt, material.encode(), hashlib.sha256).hexdigest()
        return f"{provider}:{digest[:16]}"

    def get(self, key: str) -> BreakerEntry:
        """The entry for ``key``, made if new; marks it used."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None:
            self._make_room(now)
            entry = self._entries[key] = BreakerEntry(CircuitBreaker(self._config, self._clock), now)
        else:
            self._entries.move_to_end(key)
        entry.last_used = now
        return entry

    def peek(self, key: str) -> BreakerEntry | None:
        """The entry for ``key`` if there is one, without touching its age."""
        return self._entries.get(key)

    def items(self) -> list[tuple[str, BreakerEntry]]:
        """Every (key, entry), without touching their ages (for metrics)."""
        return list(self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)

    def _make_room(self, now: float) -> None:
        while self._entries:  # ordered by last use: the idle ones are at the front
            oldest = next(iter(self._entries.values()))
            if now - oldest.last_used <= self._ttl:
                break
            self._entries.popitem(last=False)
        if len(self._entries) < self._max:
            return
        victim = next((k for k, e in self._entries.items() if e.quiet()), None)
        del self._entries[victim if victim is not None else next(iter(self._entries))]
