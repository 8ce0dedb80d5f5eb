"""API keys for deployments reachable by more than a trusted proxy (``require_api_key``).

A key is ``oak_<id>_<secret>``: the id finds the row, the secret is stored only as its SHA-256 (the secret is
32 random bytes, so a plain hash is enough) and compared with ``hmac.compare_digest``. A key may be bound to
a tenant; the tenancy layer then ignores ``X-Tenant-ID``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from server.errors import BadRequest, Unauthorized
from server.sessions.store import now_iso
from server.store.sql import Conn
from server.store.store import Store
from server.tenancy import OWNER_ID, parse_tenant_id

PREFIX = "oak_"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    id: str
    key: str  # shown once, never stored
    tenant_id: str | None


class ApiKeys:
    def __init__(self, db: Store) -> None:
        self._db = db

    async def create(self, tenant_id: str | None = None) -> CreatedKey:
        """A new key (bound to ``tenant_id`` when given; ``owner`` binds to the owner)."""
        if tenant_id is not None and tenant_id != OWNER_ID:
            parse_tenant_id(tenant_id)
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = (key_id, _hash(secret), tenant_id, now_iso())

        def insert(conn: Conn) -> None:
            conn.execute("INSERT INTO api_keys (id, secret_hash, tenant_id, created_at)"
                         " VALUES (?,?,?,?)", row)

        await self._db.write(insert)
        return CreatedKey(key_id, f"{PREFIX}{key_id}_{secret}", tenant_id)

    async def authenticate(self, authorization: str | None) -> str | None:
        """The tenant the key is bound to (None: unbound), or 401 for a missing or wrong key."""
        if not authorization:
            raise Unauthorized("API_KEY_REQUIRED", "this server requires Authorization: Bearer <api key>")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(PREFIX):
            raise Unauthorized("INVALID_API_KEY", "the API key is missing or not valid")
        key_id, _, secret = token[len(PREFIX):].partition("_")
        rows = await self._db.read("SELECT secret_hash, tenant_id FROM api_keys WHERE id = ?", (key_id,))
        expected = rows[0]["secret_hash"] if rows else _hash(secrets.token_hex(16))
        if not (hmac.compare_digest(expected, _hash(secret)) and rows):
            raise Unauthorized("INVALID_API_KEY", "the API key is missing or not valid")
        tenant: str | None = rows[0]["tenant_id"]
        return tenant

    async def revoke(self, key_id: str) -> None:
        def remove(conn: Conn) -> int:
            return conn.execute("DELETE FROM api_keys WHERE id = ?", (key_id,)).rowcount

        if await self._db.write(remove) == 0:
            raise BadRequest("API_KEY_NOT_FOUND", f"no API key with id {key_id[:20]!r}")
