"""The OAuth token per tenant, sealed in ``provider_credentials`` with ``auth_method='oauth'``, and the
tenant's preferred source for the ``openanalyst`` provider."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from server.sessions.store import now_iso
from server.store.secretbox import SecretBox
from server.store.sql import Conn
from server.store.store import Store

PROVIDER = "openanalyst"
Source = Literal["oauth", "manual"]


@dataclass(frozen=True, repr=False)
class OAuthToken:
    access_token: str
    refresh_token: str
    email: str
    expires_at: float  # epoch seconds

    def __repr__(self) -> str:
        return f"OAuthToken(email={self.email!r}, expires_at={self.expires_at}, [tokens redacted])"


class OAuthTokenStore:
    def __init__(self, db: Store, box: SecretBox) -> None:
        self._db = db
        self._box = box

    async def get(self, tenant_id: str) -> OAuthToken | None:
        rows = await self._db.read("SELECT secret FROM provider_credentials WHERE tenant_id = ? AND provider = ?"
                                   " AND auth_method = 'oauth'", (tenant_id, PROVIDER))
        if not rows:
            return None
        data = json.loads(self._box.open(rows[0]["secret"]))
        return OAuthToken(data["access_token"], data["refresh_token"], data["email"], float(data["expires_at"]))

    async def save(self, tenant_id: str, token: OAuthToken) -> None:
        sealed = self._box.seal(json.dumps({"access_token": token.access_token, "refresh_token": token.refresh_token,
                                            "email": token.email, "expires_at": token.expires_at}).encode())
        stamp = now_iso()

        def upsert(conn: Conn) -> None:
            conn.execute("INSERT INTO provider_credentials (tenant_id, provider, auth_method, secret, base_url,"
                         " key_last4, updated_at) VALUES (?,?,'oauth',?,NULL,'****',?)"
                         " ON CONFLICT (tenant_id, provider, auth_method) DO UPDATE SET secret = excluded.secret,"
                         " updated_at = excluded.updated_at", (tenant_id, PROVIDER, sealed, stamp))

        await self._db.write(upsert)

    async def delete(self, tenant_id: str) -> None:
        def remove(conn: Conn) -> None:
            conn.execute("DELETE FROM provider_credentials WHERE tenant_id = ? AND provider = ?"
                         " AND auth_method = 'oauth'", (tenant_id, PROVIDER))

        await self._db.write(remove)

    async def preference(self, tenant_id: str) -> Source | None:
        rows = await self._db.read("SELECT preferred_source FROM provider_preferences WHERE tenant_id = ?"
                                   " AND provider = ?", (tenant_id, PROVIDER))
        value = rows[0]["preferred_source"] if rows else None
        return "oauth" if value == "oauth" else "manual" if value == "manual" else None

    async def set_preference(self, tenant_id: str, source: Source) -> None:
        stamp = now_iso()

        def upsert(conn: Conn) -> None:
            conn.execute("INSERT INTO provider_preferences (tenant_id, provider, preferred_source, updated_at)"
                         " VALUES (?,?,?,?) ON CONFLICT (tenant_id, provider) DO UPDATE SET"
                         " preferred_source = excluded.preferred_source, updated_at = excluded.updated_at",
                         (tenant_id, PROVIDER, source, stamp))

        await self._db.write(upsert)
