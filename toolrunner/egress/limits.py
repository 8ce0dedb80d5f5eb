"""Per-tenant limits on the proxy: concurrent connections, new connections a second, a shared bandwidth budget.

Connections over a limit are refused at once (the client gets a 429 naming the limit): queueing them would
hide the limit and hold the client's sockets. The rate of new connections is bounded because every connection
is a signed audit record: without it one tenant opening and closing connections in a loop writes the shared
audit disk as fast as the writer goes. Bandwidth is a token bucket shared by all of a tenant's
connections, both directions; a connection over budget is slowed, not cut, and its record says for how long.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` bytes (or connections) per second with a burst of ``burst`` (default: one second's worth);
    ``spend`` says how long to wait off a debt."""

    rate: float
    burst: float = 0.0
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.burst = self.burst or self.rate
        self.tokens = self.burst

    def available(self) -> float:
        """What may pass now (negative: a debt still being waited off)."""
        return min(self.burst, self.tokens + (time.monotonic() - self.stamp) * self.rate)

    def spend(self, n: int) -> float:
        """Spend ``n`` (already read); the seconds the reader must pause to stay in the rate."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - n
        self.stamp = now
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


@dataclass
class TenantLimits:
    """Live counters of one tenant: open connections, its rate of new ones and its bandwidth bucket (None:
    unlimited)."""

    max_connections: int
    bucket: TokenBucket | None
    rate: TokenBucket  # new connections
    open: int = 0

    def take_rate(self) -> bool:
        """Spend one new connection of the rate budget, if it holds one."""
        if self.rate.available() < 1:
            return False
        self.rate.spend(1)
        return True

    def try_open(self) -> bool:
        if self.open >= self.max_connections:
            return False
        self.open += 1
        return True

    def close(self) -> None:
        self.open -= 1
