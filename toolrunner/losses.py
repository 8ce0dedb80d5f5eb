"""What a tenant lost when its container stopped, so that the loss is never silent (docs/sandbox-faults.md §1).

A container that stops — evicted to make room for another tenant, stopped for idleness, dead, or removed —
takes its sessions' shell state (cwd, exports), REPL variables and background processes with it; the
workspace stays. ``Losses`` remembers, per tenant, the last such stop (``GET /v1/sandbox`` shows it as
``last_stop``) and the sessions that had run a call in that container. After an *eviction* — the one stop
the tenant neither caused nor can foresee (another tenant needed the slot) — the next call of such a session
to a tool that depends on that state (``STATEFUL_TOOLS``) is answered ``SESSION_STATE_LOST`` once, not run,
so neither a model nor a client goes on as if the state were there (a ``cd`` then ``rm -r build`` would run
in the wrong directory). Other tools run normally and leave the notice pending. The other stops are the
tenant's own or documented (``DELETE /v1/sandbox``, its idle timeout; a death already failed its calls with
``SANDBOX_DIED``/``OOM_KILLED``): they show in ``last_stop`` only, and the next call runs, as it always did.

Bounded: at most ``MAX_TENANTS`` tenants and ``MAX_SESSIONS`` pending sessions per tenant (oldest dropped).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from toolrunner.results import ToolResult, error_result

STATEFUL_TOOLS = frozenset({"bash", "bash_output", "kill_process", "repl"})
TOLD_REASONS = frozenset({"evicted"})  # stops whose sessions are answered SESSION_STATE_LOST once
REASONS = {
    "evicted": "stopped to make room for another tenant's container (the host's container cap was reached)",
    "idle": "stopped after its idle timeout",
    "died": "stopped unexpectedly (killed, out of memory, or unresponsive)",
    "removed": "removed (DELETE /v1/sandbox or a server restart)",
}
MAX_TENANTS = 10_000
MAX_SESSIONS = 1_000


@dataclass(frozen=True)
class Stop:
    """One stop of a tenant's container: when, why, which container, and what its runner said it held."""

    at: float  # epoch seconds
    reason: str  # a key of REASONS
    container_id: str
    held: dict[str, int] | None  # the runner's ``holds`` just before the stop, when it was asked
    sessions: int  # sessions that had run a call in it (told SESSION_STATE_LOST when evicted)

    def view(self) -> dict[str, Any]:
        """``last_stop`` of ``GET /v1/sandbox``."""
        return {"at": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "reason": self.reason, "message": REASONS.get(self.reason, self.reason),
                "container_id": self.container_id, "held": self.held, "sessions": self.sessions}


class Losses:
    """Sessions seen per live container, and the stops that lost them."""

    def __init__(self) -> None:
        self._seen: dict[str, set[str]] = {}  # tenant -> sessions that ran a call in its live container
        self._pending: dict[str, dict[str, Stop]] = {}  # tenant -> session -> the stop it has not been told of
        self._last: dict[str, Stop] = {}

    def saw(self, tenant: str, session: str) -> None:
        seen = self._seen.setdefault(tenant, set())
        if session not in seen and len(seen) < MAX_SESSIONS:
            seen.add(session)

    def closed(self, tenant: str, session: str) -> None:
        """A session the server closed lost nothing it still expects."""
        self._seen.get(tenant, set()).discard(session)
        self._pending.get(tenant, {}).pop(session, None)

    def stopped(self, tenant: str, container_id: str, reason: str, held: dict[str, int] | None = None) -> Stop:
        """Record a stop of the tenant's container; after an eviction every session seen in it is owed a notice."""
        seen = self._seen.pop(tenant, set())
        stop = Stop(time.time(), reason, container_id, held, len(seen))
        self._last.pop(tenant, None)
        self._last[tenant] = stop
        pending = self._pending.pop(tenant, {})
        if reason in TOLD_REASONS:
            pending.update(dict.fromkeys(seen, stop))
        while len(pending) > MAX_SESSIONS:
            del pending[next(iter(pending))]
        if pending:
            self._pending[tenant] = pending
        while len(self._last) > MAX_TENANTS:
            del self._last[next(iter(self._last))]
        while len(self._pending) > MAX_TENANTS:
            del self._pending[next(iter(self._pending))]
        return stop

    def last(self, tenant: str) -> Stop | None:
        return self._last.get(tenant)

    def notice(self, tenant: str, session: str, tool: str) -> ToolResult | None:
        """The ``SESSION_STATE_LOST`` answer owed to this call (once), or None to run it."""
        if tool not in STATEFUL_TOOLS:
            return None
        pending = self._pending.get(tenant)
        stop = pending.pop(session, None) if pending else None
        if stop is None:
            return None
        when = stop.view()["at"]
        return error_result(
            tool, "SESSION_STATE_LOST",
            f"this session's sandbox state is gone: the container was {REASONS.get(stop.reason, stop.reason)} "
            f"at {when}. Its working directory and exported variables, REPL variables and background processes "
            "are lost; files in the workspace are kept. This call was not run: run it again, re-creating the "
            "state it needs (cd, exports, background jobs).")
