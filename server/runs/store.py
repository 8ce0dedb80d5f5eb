"""Runs and their webhook delivery attempts in the server's SQLite (migration 4), always tenant-scoped.

A run's row is written when it is created (``queued``), when its turn starts (``running``) and once at its
end; ``fail_unfinished`` at start-up turns what an earlier process left ``queued``/``running`` into
``failed`` ``SERVER_RESTARTED``, so no run is ever reported running by a server that is not running it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from server.errors import NotFound
from server.store.sql import Conn, Row
from server.store.store import Store

FINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


@dataclass
class RunRow:
    id: str
    tenant_id: str
    message: str
    limits: dict[str, Any]
    status: str = "queued"
    session_id: str | None = None
    environment: str | None = None
    webhook_url: str | None = None
    webhook_secret: bytes | None = field(default=None, repr=False)  # sealed (server.store.secretbox)
    error_code: str | None = None
    error_message: str | None = None
    answer: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    turns: int = 0
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True)
class DeliveryRow:
    run_id: str
    attempt: int
    event_id: str
    url: str
    attempted_at: str
    status_code: int | None
    error: str | None
    duration_ms: float
    succeeded: bool
    next_attempt_at: str | None


_COLUMNS = [f for f in RunRow.__dataclass_fields__]
_UPSERT = (f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"  # noqa: S608
           f" ON CONFLICT (id) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in _COLUMNS if n != 'id')}")
# (the dataclass's own field names, never input)


def _run(r: Row) -> RunRow:
    values = {name: r[name] for name in _COLUMNS}
    values["limits"] = json.loads(values["limits"])
    return RunRow(**values)


class RunStore:
    def __init__(self, db: Store) -> None:
        self._db = db

    async def save(self, run: RunRow) -> None:
        """Insert or replace the whole row (one writer: the run's own task)."""
        values = asdict(run)
        values["limits"] = json.dumps(run.limits)

        def upsert(conn: Conn) -> None:
            conn.execute(_UPSERT, [values[n] for n in _COLUMNS])

        await self._db.write(upsert)

    async def get(self, tenant_id: str, run_id: str) -> RunRow:
        rows = await self._db.read("SELECT * FROM runs WHERE id = ? AND tenant_id = ?", (run_id, tenant_id))
        if not rows:
            raise NotFound("RUN_NOT_FOUND", f"no run {run_id[:80]!r}")
        return _run(rows[0])

    async def page(self, tenant_id: str, limit: int, status: str | None = None) -> list[RunRow]:
        """The tenant's newest runs first."""
        if status is None:
            rows = await self._db.read("SELECT * FROM runs WHERE tenant_id = ? ORDER BY created_at DESC, id LIMIT ?",
                                       (tenant_id, limit))
        else:
            rows = await self._db.read("SELECT * FROM runs WHERE tenant_id = ? AND status = ?"
                                       " ORDER BY created_at DESC, id LIMIT ?", (tenant_id, status, limit))
        return [_run(r) for r in rows]

    async def fail_unfinished(self, finished_at: str, message: str) -> list[RunRow]:
        """Start-up: every run left queued or running becomes failed ``SERVER_RESTARTED``; returns them."""

        def update(conn: Conn) -> list[RunRow]:
            return [_run(r) for r in conn.execute(
                "UPDATE runs SET status = 'failed', error_code = 'SERVER_RESTARTED', error_message = ?,"
                " finished_at = ? WHERE status IN ('queued', 'running') RETURNING *", (message, finished_at))]

        return await self._db.write(update)

    async def undelivered(self, max_attempts: int, finished_since: str) -> list[tuple[RunRow, int, str | None]]:
        """Ended runs (since ``finished_since``) whose webhook has not taken their outcome and has attempts
        left: (run, attempts made, the event id they used)."""
        rows = await self._db.read(
            "SELECT r.*, (SELECT COUNT(*) FROM run_deliveries d WHERE d.run_id = r.id) AS attempts,"
            " (SELECT event_id FROM run_deliveries d WHERE d.run_id = r.id ORDER BY attempt LIMIT 1) AS event_id"
            " FROM runs r WHERE r.webhook_url IS NOT NULL AND r.finished_at >= ?"
            " AND r.status IN ('succeeded', 'failed', 'cancelled', 'timed_out')"
            " AND NOT EXISTS (SELECT 1 FROM run_deliveries d WHERE d.run_id = r.id AND d.succeeded = 1)",
            (finished_since,))
        return [(_run(r), r["attempts"], r["event_id"]) for r in rows if r["attempts"] < max_attempts]

    async def add_delivery(self, row: DeliveryRow) -> None:
        values = (row.run_id, row.attempt, row.event_id, row.url, row.attempted_at, row.status_code, row.error,
                  row.duration_ms, int(row.succeeded), row.next_attempt_at)

        def insert(conn: Conn) -> None:
            conn.execute("INSERT INTO run_deliveries (run_id, attempt, event_id, url, attempted_at, status_code,"
                         " error, duration_ms, succeeded, next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?,?)", values)

        await self._db.write(insert)

    async def deliveries(self, run_id: str) -> list[DeliveryRow]:
        rows = await self._db.read("SELECT * FROM run_deliveries WHERE run_id = ? ORDER BY attempt", (run_id,))
        return [DeliveryRow(r["run_id"], r["attempt"], r["event_id"], r["url"], r["attempted_at"], r["status_code"],
                            r["error"], r["duration_ms"], bool(r["succeeded"]), r["next_attempt_at"]) for r in rows]
