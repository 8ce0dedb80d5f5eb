"""Sessions and their messages, always scoped by tenant: another tenant's session is simply not found.

Blocks are stored as the JSON list the providers layer uses: ``{"type":"text","text"}``,
``{"type":"tool_use","id","name","input"}``, ``{"type":"tool_result","tool_use_id","content","is_error"}``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from server.errors import Conflict, NotFound
from server.sessions.events import delete_events
from server.store.sql import Conn, Row, insertion_order
from server.store.store import Store


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_session_id() -> str:
    return "sess_" + secrets.token_urlsafe(18)


@dataclass(frozen=True)
class SessionRecord:
    id: str
    tenant_id: str
    title: str | None
    model: str | None
    system_prompt: str | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    environment: str | None = None  # the environment its tool calls run in (docs/environments.md)

    def public(self) -> dict[str, Any]:
        return {"session_id": self.id, "title": self.title, "model": self.model,
                "system_prompt": self.system_prompt, "metadata": self.metadata, "environment": self.environment,
                "created_at": self.created_at, "updated_at": self.updated_at}


def _session(row: Row) -> SessionRecord:
    return SessionRecord(row["id"], row["tenant_id"], row["title"], row["model"], row["system_prompt"],
                         json.loads(row["metadata"]), row["created_at"], row["updated_at"], row["environment"])


class SessionStore:
    """Create, find, list, delete sessions; append and list their messages."""

    def __init__(self, db: Store) -> None:
        self._db = db

    async def create(self, tenant_id: str, *, title: str | None = None, model: str | None = None,
                     system_prompt: str | None = None,
                     metadata: dict[str, Any] | None = None, max_sessions: int | None = None,
                     environment: str | None = None) -> SessionRecord:
        """A new session; past ``max_sessions`` of the tenant's (counted in the insert's transaction, so
        concurrent creates cannot pass it), 409 ``SESSION_LIMIT_REACHED``."""
        stamp = now_iso()
        record = SessionRecord(new_session_id(), tenant_id, title, model, system_prompt, metadata or {},
                               stamp, stamp, environment)

        def insert(conn: Conn) -> None:
            if max_sessions is not None and conn.execute(
                    "SELECT COUNT(*) FROM sessions WHERE tenant_id = ?", (tenant_id,)).fetchone()[0] >= max_sessions:
                raise Conflict("SESSION_LIMIT_REACHED",
                               f"this tenant already has {max_sessions} sessions, the limit; delete some "
                               "(DELETE /sessions/{id}) before creating more")
            conn.execute("INSERT INTO sessions (id, tenant_id, title, model, system_prompt, metadata,"
                         " created_at, updated_at, environment) VALUES (?,?,?,?,?,?,?,?,?)",
                         (record.id, tenant_id, title, model, system_prompt, json.dumps(record.metadata),
                          stamp, stamp, environment))

        await self._db.write(insert)
        return record

    async def get(self, tenant_id: str, session_id: str) -> SessionRecord:
        """The tenant's session, or 404 SESSION_NOT_FOUND (also for another tenant's)."""
        rows = await self._db.read("SELECT * FROM sessions WHERE id = ? AND tenant_id = ?", (session_id, tenant_id))
        if not rows:
            raise NotFound("SESSION_NOT_FOUND", f"no session {session_id[:80]!r}")
        return _session(rows[0])

    async def page(self, tenant_id: str, page: int, per_page: int | None) -> tuple[list[SessionRecord], int]:
        """The tenant's sessions, newest first, and their count; ``per_page`` None: all of them."""
        total = int((await self._db.read("SELECT COUNT(*) FROM sessions WHERE tenant_id = ?", (tenant_id,)))[0][0])
        newest = "SELECT * FROM sessions WHERE tenant_id = ? ORDER BY created_at DESC, id DESC"
        if per_page is None:
            rows = await self._db.read(newest, (tenant_id,))
        else:
            rows = await self._db.read(newest + " LIMIT ? OFFSET ?", (tenant_id, per_page, (page - 1) * per_page))
        return [_session(r) for r in rows], total

    async def delete(self, tenant_id: str, session_id: str) -> None:
        """Remove the session, its messages and its events in one transaction."""

        def remove(conn: Conn) -> int:
            delete_events(conn, session_id)
            cur = conn.execute("DELETE FROM sessions WHERE id = ? AND tenant_id = ?", (session_id, tenant_id))
            return cur.rowcount

        if await self._db.write(remove) == 0:
            raise NotFound("SESSION_NOT_FOUND", f"no session {session_id[:80]!r}")

    async def append_message(self, tenant_id: str, session_id: str, role: str,
                             blocks: list[dict[str, Any]]) -> str:
        """Store one message; returns its id. The session must be the tenant's (else 404)."""
        await self.get(tenant_id, session_id)
        message_id = "msg_" + secrets.token_urlsafe(12)
        stamp = now_iso()

        def insert(conn: Conn) -> None:
            if conn.execute("SELECT 1 FROM sessions WHERE id = ? AND tenant_id = ?",
                            (session_id, tenant_id)).fetchone() is None:  # deleted meanwhile
                raise NotFound("SESSION_NOT_FOUND", f"no session {session_id[:80]!r}")
            conn.execute("INSERT INTO messages (id, session_id, role, content, created_at)"
                         " VALUES (?,?,?,?,?)",
                         (message_id, session_id, role, json.dumps(blocks, ensure_ascii=False), stamp))
            conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (stamp, session_id))

        await self._db.write(insert)
        return message_id

    async def set_todos(self, tenant_id: str, session_id: str, todos: list[dict[str, Any]]) -> None:
        """Replace the session's todo list (the ``todo_write`` tool's state)."""
        await self.get(tenant_id, session_id)
        payload = json.dumps(todos, ensure_ascii=False)

        def update(conn: Conn) -> None:
            conn.execute("UPDATE sessions SET todos = ? WHERE id = ? AND tenant_id = ?",
                         (payload, session_id, tenant_id))

        await self._db.write(update)

    async def get_todos(self, tenant_id: str, session_id: str) -> list[dict[str, Any]]:
        await self.get(tenant_id, session_id)
        rows = await self._db.read("SELECT todos FROM sessions WHERE id = ?", (session_id,))
        todos: list[dict[str, Any]] = json.loads(rows[0][0]) if rows else []
        return todos

    async def list_messages(self, tenant_id: str, session_id: str) -> list[dict[str, Any]]:
        """The whole conversation, oldest first: ``{id, role, content: [blocks], created_at}``."""
        await self.get(tenant_id, session_id)
        order = insertion_order(self._db.dialect)
        rows = await self._db.read("SELECT id, role, content, created_at FROM messages WHERE session_id = ?"  # noqa: S608
                                   f" ORDER BY {order}", (session_id,))
        return [{"id": r["id"], "role": r["role"], "content": json.loads(r["content"]),
                 "created_at": r["created_at"]} for r in rows]
