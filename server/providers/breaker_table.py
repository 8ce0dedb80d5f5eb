"""Circuit breakers per upstream identity: provider + where the requests go + whose credential they carry.

One tenant's failing gateway opens only the breaker of its own (base URL, key); tenants that share the
server's own credential share its breaker, since that is one upstream. The key is ``provider:`` + 16 hex
digits of an HMAC-SHA256, under a random per-process salt, of the base URL and every credential value — so
neither the key nor a guessable hash of it appears in logs, metrics or ``GET /v1/providers/status``.

The table is bounded: entries idle longer than ``idle_ttl_s`` go first, then the least recently used quiet
ones (closed, no failures, no rejected key), then the least recently used, so a tenant inventing base URLs
cannot grow it without limit.
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


class BreakerEntry:
    """A breaker and what the status route shows next to it."""

    def __init__(self, breaker: CircuitBreaker, now: float) -> None:
        self.breaker = breaker
        self.last_error: str | None = None
        self.last_latency_ms: float | None = None
        self.last_used = now

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
