"""The approvals table: one row per call that waited for a person, kept after the decision for reading back.

A row is ``pending`` while its call waits; then ``allowed``, ``denied``, ``timed_out``, ``interrupted`` or
``abandoned`` (the server stopped while it waited: ``ApprovalStore.abandon_pending`` at start-up).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.store.sql import Conn, Row
from server.store.store import Store

FINAL = ("allowed", "denied", "timed_out", "interrupted", "abandoned")


@dataclass(frozen=True)
class ApprovalRow:
    tenant_id: str
    session_id: str
    call_id: str
    tool: str
    arguments: dict[str, Any]
    reason_asked: str
    status: str
    created_at: str
    expires_at: str
    decided_at: str | None
    decided_by_tenant: str | None
    decided_by_key: str | None
    reason: str | None

    def decided_by(self) -> str | None:
        if self.decided_by_tenant is None:
            return None
        return f"{self.decided_by_tenant} (key {self.decided_by_key})" if self.decided_by_key \
            else self.decided_by_tenant


def _row(r: Row) -> ApprovalRow:
    return ApprovalRow(r["tenant_id"], r["session_id"], r["call_id"], r["tool"], json.loads(r["arguments"]),
                       r["reason_asked"], r["status"], r["created_at"], r["expires_at"], r["decided_at"],
                       r["decided_by_tenant"], r["decided_by_key"], r["reason"])


class ApprovalStore:
    def __init__(self, db: Store) -> None:
        self._db = db

    async def add(self, row: ApprovalRow) -> None:
        values = (row.tenant_id, row.session_id, row.call_id, row.tool, json.dumps(row.arguments),
                  row.reason_asked, row.status, row.created_at, row.expires_at)

        def insert(conn: Conn) -> None:
            conn.execute("INSERT INTO approvals (tenant_id, session_id, call_id, tool, arguments, reason_asked,"
                         " status, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?)", values)

        await self._db.write(insert)

    async def decide(self, row: ApprovalRow) -> None:
        """Store the final state of the newest pending row of this call."""
        values = (row.status, row.decided_at, row.decided_by_tenant, row.decided_by_key, row.reason,
                  row.tenant_id, row.session_id, row.call_id)

        def update(conn: Conn) -> None:
            conn.execute("UPDATE approvals SET status = ?, decided_at = ?, decided_by_tenant = ?,"
                         " decided_by_key = ?, reason = ? WHERE id = (SELECT MAX(id) FROM approvals WHERE"
                         " tenant_id = ? AND session_id = ? AND call_id = ? AND status = 'pending')", values)

        await self._db.write(update)

    async def latest(self, tenant_id: str, session_id: str, call_id: str) -> ApprovalRow | None:
        rows = await self._db.read("SELECT * FROM approvals WHERE tenant_id = ? AND session_id = ? AND call_id = ?"
                                   " ORDER BY id DESC LIMIT 1", (tenant_id, session_id, call_id))
        return _row(rows[0]) if rows else None

    async def for_session(self, tenant_id: str, session_id: str, limit: int = 100) -> list[ApprovalRow]:
        rows = await self._db.read("SELECT * FROM approvals WHERE tenant_id = ? AND session_id = ?"
                                   " ORDER BY id DESC LIMIT ?", (tenant_id, session_id, limit))
        return [_row(r) for r in rows]

    async def abandon_pending(self, decided_at: str, reason: str) -> list[ApprovalRow]:
        """Mark every pending row ``abandoned`` (start-up: no process waits for them any more)."""

        def update(conn: Conn) -> list[ApprovalRow]:
            return [_row(r) for r in conn.execute(
                "UPDATE approvals SET status = 'abandoned', decided_at = ?, reason = ? WHERE status = 'pending'"
                " RETURNING *", (decided_at, reason))]

        return await self._db.write(update)
