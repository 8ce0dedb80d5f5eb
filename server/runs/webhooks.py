"""A run's outcome, POSTed to its webhook, signed, retried with back-off; every attempt is recorded.

Signature (docs/runs.md has a receiver's check): ``OpenAnalyst-Signature: t=<unix>,v1=<hex>`` where the hex is
HMAC-SHA256 with the secret over ``f"{t}.{raw body}"``; ``OpenAnalyst-Webhook-Id`` is the same on every retry
of one outcome. The client is the guarded one (``server.providers.guarded_http``): each connection's address
obeys the owner's rule for tenant-supplied URLs, so a name that later resolves to a private address is
refused at connect time too.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from server.runs.store import DeliveryRow, RunStore
from server.sessions.store import now_iso

log = logging.getLogger(__name__)
SIGNATURE = "OpenAnalyst-Signature"
TIMESTAMP = "OpenAnalyst-Webhook-Timestamp"
WEBHOOK_ID = "OpenAnalyst-Webhook-Id"
ATTEMPT_TIMEOUT_S = 10.0
MAX_BACKOFF_S = 300.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``OpenAnalyst-Signature`` header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    first_delay_s: float = 1.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1, 2, 4 … times the first delay, capped)."""
        return min(self.first_delay_s * float(2 ** (attempt - 1)), MAX_BACKOFF_S)


class WebhookSender:
    def __init__(self, client: httpx.AsyncClient, store: RunStore, retry: RetryPolicy,
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._store = store
        self._retry = retry
        self._clock = clock

    @property
    def max_attempts(self) -> int:
        return self._retry.max_attempts

    async def deliver(self, run_id: str, event_id: str, url: str, secret: str, payload: dict[str, Any], *,
                      first_attempt: int = 1) -> bool:
        """Attempt until a 2xx or the attempts run out (``first_attempt`` > 1: resuming after a restart); True
        when delivered."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        for attempt in range(first_attempt, self._retry.max_attempts + 1):
            status, error, elapsed_ms = await self._attempt(url, event_id, secret, body)
            ok = status is not None and 200 <= status < 300
            last = ok or attempt == self._retry.max_attempts
            delay = self._retry.delay(attempt)
            next_at = None if last else (datetime.now(UTC) + timedelta(seconds=delay)).isoformat(
                timespec="milliseconds").replace("+00:00", "Z")
            await self._store.add_delivery(DeliveryRow(run_id, attempt, event_id, url, now_iso(), status, error,
                                                       elapsed_ms, ok, next_at))
            if ok:
                return True
            if last:
                log.warning("run %s: webhook not delivered after %d attempts", run_id, attempt)
                return False
            await asyncio.sleep(delay)  # the back-off between attempts, not a synchronisation wait
        return False

    async def _attempt(self, url: str, event_id: str, secret: str, body: bytes) -> tuple[int | None, str | None, float]:
        timestamp = int(self._clock())
        headers = {"Content-Type": "application/json", WEBHOOK_ID: event_id, TIMESTAMP: str(timestamp),
                   SIGNATURE: sign(secret, timestamp, body), "User-Agent": "openanalyst-webhooks/1"}
        started = time.perf_counter()
        try:
            response = await self._client.post(url, content=body, headers=headers,
                                               timeout=httpx.Timeout(ATTEMPT_TIMEOUT_S))
            await response.aclose()
        except Exception as exc:  # refused address, DNS, connect, timeout: a failed attempt, recorded
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            return None, message[:500], _ms(started)
        error = None if 200 <= response.status_code < 300 else f"the receiver answered {response.status_code}"
        return response.status_code, error, _ms(started)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
