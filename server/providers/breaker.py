"""Circuit breaker for one upstream identity (``breaker_table`` keys them by provider, base URL, credential).

closed ──K consecutive failures──► open ──cooldown elapsed──► half_open (one probe at a time)
half_open ──probe succeeds──► closed;  ──probe fails──► open, cooldown doubled (up to a max)

Separately, a credential that the provider rejected (401/403/402) is remembered by its fingerprint (a hash,
never the key): the provider is skipped for that credential until the key changes, however much time passes.
Time comes from an injected clock so tests need no sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]
MAX_DEAD_KEYS = 64


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 3
    cooldown_s: float = 5.0
    max_cooldown_s: float = 300.0


class CircuitBreaker:
    def __init__(self, config: BreakerConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self._state: State = "closed"
        self.consecutive_failures = 0
        self._opened_at = 0.0
        self._cooldown = config.cooldown_s
        self._probing = False
        self._dead_keys: dict[str, str] = {}  # fingerprint → reason

    @property
    def state(self) -> State:
        if self._state == "open" and self._clock() - self._opened_at >= self._cooldown:
            return "half_open"
        return self._state

    @property
    def cooldown_s(self) -> float:
        return self._cooldown

    @property
    def has_rejected_keys(self) -> bool:
        return bool(self._dead_keys)

    def rejected_key(self, fingerprint: str) -> str | None:
        """Why this credential was rejected, or None if it was not."""
        return self._dead_keys.get(fingerprint)

    def allow(self, fingerprint: str) -> bool:
        """May a request go to this provider with this credential now? Claims the probe slot if half-open."""
        if fingerprint in self._dead_keys:
            return False
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._state = "half_open"
            self._probing = True
            return True
        return False

    def release(self) -> None:
        """A request that claimed the probe ended without a verdict (e.g. the consumer went away)."""
        self._probing = False

    def record_success(self) -> None:
        self._state = "closed"
        self.consecutive_failures = 0
        self._cooldown = self.config.cooldown_s
        self._probing = False

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if self._state == "half_open" or self._probing:
            self._cooldown = min(self._cooldown * 2, self.config.max_cooldown_s)
            self._trip()
        elif self.consecutive_failures >= self.config.failure_threshold:
            self._trip()
        self._probing = False

    def record_rejected_key(self, fingerprint: str, reason: str) -> None:
        if len(self._dead_keys) >= MAX_DEAD_KEYS:
            self._dead_keys.pop(next(iter(self._dead_keys)))
        self._dead_keys[fingerprint] = reason

    def _trip(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
