"""The user of each tenant: the owner is created at first start, a tenant's user at its first request."""

from __future__ import annotations

import secrets
from typing import Any

from server.sessions.store import now_iso
from server.store.sql import Conn
from server.store.store import Store
from server.tenancy import OWNER_ID


class UserStore:
    def __init__(self, db: Store) -> None:
        self._db = db
        self._known: dict[str, dict[str, Any]] = {}

    async def ensure(self, tenant_id: str) -> dict[str, Any]:
        """The tenant's user record, created (and persisted) the first time it is asked for."""
        if tenant_id in self._known:
            return self._known[tenant_id]
        role = "owner" if tenant_id == OWNER_ID else "member"
        candidate = ("usr_" + secrets.token_hex(8), role, now_iso())

        def upsert(conn: Conn) -> None:
            conn.execute("INSERT INTO users (tenant_id, user_id, role, created_at)"
                         " VALUES (?,?,?,?) ON CONFLICT (tenant_id) DO NOTHING",
                         (tenant_id, *candidate))

        await self._db.write(upsert)
        row = (await self._db.read("SELECT user_id, role, created_at FROM users WHERE tenant_id = ?",
                                   (tenant_id,)))[0]
        user = {"id": row["user_id"], "tenant": tenant_id, "role": row["role"],
                "created_at": row["created_at"]}
        self._known[tenant_id] = user
        return user
