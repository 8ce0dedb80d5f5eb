"""Environment definitions and each tenant's default, in SQLite, always scoped by tenant: another tenant's
environment is simply not found (the same 404 as a missing one)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.errors import Conflict, NotFound
from server.sessions.store import now_iso
from server.store.sql import Conn, Row
from server.store.store import Store


@dataclass(frozen=True)
class EnvironmentRecord:
    tenant_id: str
    name: str
    definition: dict[str, Any]  # the normalised definition (toolrunner.envbuild.Definition.as_json)
    created_at: str


def not_found(name: str) -> NotFound:
    return NotFound("ENVIRONMENT_NOT_FOUND", f"no environment named {name!r}")


class EnvironmentStore:
    """Create, read, list and delete definitions; set and read the tenant's default environment."""

    def __init__(self, db: Store) -> None:
        self._db = db

    async def create(self, tenant_id: str, name: str, definition: dict[str, Any],
                     max_per_tenant: int) -> EnvironmentRecord:
        record = EnvironmentRecord(tenant_id, name, definition, now_iso())

        def insert(conn: Conn) -> None:
            if conn.execute("SELECT 1 FROM environments WHERE tenant_id = ? AND name = ?",
                            (tenant_id, name)).fetchone():
                raise Conflict("ENVIRONMENT_EXISTS", f"an environment named {name!r} exists; delete it first")
            count = conn.execute("SELECT COUNT(*) FROM environments WHERE tenant_id = ?", (tenant_id,)).fetchone()
            if count[0] >= max_per_tenant:
                raise Conflict("ENVIRONMENT_LIMIT", f"at most {max_per_tenant} environments per tenant")
            conn.execute("INSERT INTO environments (tenant_id, name, definition, created_at) VALUES (?, ?, ?, ?)",
                         (tenant_id, name, json.dumps(definition, sort_keys=True), record.created_at))

        await self._db.write(insert)
        return record

    async def get(self, tenant_id: str, name: str) -> EnvironmentRecord:
        rows = await self._db.read("SELECT * FROM environments WHERE tenant_id = ? AND name = ?", (tenant_id, name))
        if not rows:
            raise not_found(name)
        return _record(rows[0])

    async def list(self, tenant_id: str) -> list[EnvironmentRecord]:
        return [_record(r) for r in await self._db.read(
            "SELECT * FROM environments WHERE tenant_id = ? ORDER BY name", (tenant_id,))]

    async def delete(self, tenant_id: str, name: str) -> None:
        def remove(conn: Conn) -> int:
            conn.execute("DELETE FROM environment_defaults WHERE tenant_id = ? AND name = ?", (tenant_id, name))
            return conn.execute("DELETE FROM environments WHERE tenant_id = ? AND name = ?",
                                (tenant_id, name)).rowcount

        if not await self._db.write(remove):
            raise not_found(name)

    async def set_default(self, tenant_id: str, name: str | None) -> None:
        def put(conn: Conn) -> None:
            if name is not None and not conn.execute("SELECT 1 FROM environments WHERE tenant_id = ? AND name = ?",
                                                     (tenant_id, name)).fetchone():
                raise not_found(name)
            conn.execute("DELETE FROM environment_defaults WHERE tenant_id = ?", (tenant_id,))
            if name is not None:
                conn.execute("INSERT INTO environment_defaults (tenant_id, name) VALUES (?, ?)", (tenant_id, name))

        await self._db.write(put)

    async def get_default(self, tenant_id: str) -> str | None:
        rows = await self._db.read("SELECT name FROM environment_defaults WHERE tenant_id = ?", (tenant_id,))
        return str(rows[0]["name"]) if rows else None


def _record(row: Row) -> EnvironmentRecord:
    return EnvironmentRecord(row["tenant_id"], row["name"], json.loads(row["definition"]), row["created_at"])
