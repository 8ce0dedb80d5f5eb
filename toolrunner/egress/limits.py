"""Per-tenant limits on the proxy: concurrent connections and a shared bandwidth budget.

Connections over the limit are refused at once (the client gets a 429 naming the limit): queueing them would
hide the limit and hold the client's sockets. Bandwidth is a token bucket shared by all of a tenant's
connections, both directions; a connection over budget is slowed, not cut, and its record says for how long.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` bytes per second with a burst of one second's worth; ``spend`` says how long to wait off a debt."""

    rate: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.rate

    def available(self) -> float:
        """Bytes that may pass now (negative: a debt still being waited off)."""
        return min(self.rate, self.tokens + (time.monotonic() - self.stamp) * self.rate)

    def spend(self, n: int) -> float:
        """Spend ``n`` bytes (they were already read); the seconds the reader must pause to stay in the rate."""
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate) - n
        self.stamp = now
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


@dataclass
class TenantLimits:
    """Live counters of one tenant: open connections and its bandwidth bucket (None: unlimited)."""

    max_connections: int
    bucket: TokenBucket | None
    open: int = 0

    def try_open(self) -> bool:
        if self.open >= self.max_connections:
            return False
        self.open += 1
        return True

    def close(self) -> None:
        self.open -= 1
