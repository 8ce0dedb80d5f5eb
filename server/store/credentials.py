"""Provider credentials per tenant: API-set ones (encrypted at rest) merged over the host's env ones.

Implements ``server.providers.credentials.CredentialLookup``. The owner always sees the env credentials;
other tenants see them only when ``share_env_providers_with_tenants`` is on (default: the host's keys pay for
every tenant unless the operator says otherwise). A tenant's own key for a provider replaces the env one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.errors import Conflict, NotFound
from server.providers.bedrock import DEFAULT_REGION
from server.providers.credentials import ProviderCredential
from server.providers.registry import PROVIDERS
from server.sessions.store import now_iso
from server.store.secretbox import SecretBox
from server.store.sql import Conn
from server.store.store import Store
from server.tenancy import OWNER_ID

KNOWN = tuple(PROVIDERS)


def mask(key: str | None) -> str | None:
    """Only the last four characters, and never all of a short key."""
    if not key:
        return None
    return "****" + key[-4:] if len(key) >= 12 else "****"


@dataclass(frozen=True)
class ProviderEntry:
    name: str
    source: str
    masked_key: str | None
    base_url: str | None
    updated_at: str | None

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "api_key": self.masked_key,
                "base_url": self.base_url, "updated_at": self.updated_at}


def check_known(name: str) -> None:
    if name not in PROVIDERS:
        raise NotFound("UNKNOWN_PROVIDER", f"unknown provider {name[:40]!r}; known: {', '.join(KNOWN)}")


class CredentialStore:
    def __init__(self, db: Store, box: SecretBox, env: list[ProviderCredential], *,
                 share_env: bool, started_at: str, aws_region: str | None = None) -> None:
        self._db = db
        self._box = box
        self._env = {c.provider: c for c in env}
        self._share_env = share_env
        self._started_at = started_at
        self._aws_region = aws_region

    @property
    def env_provider_names(self) -> list[str]:
        return list(self._env)

    def _env_for(self, tenant_id: str) -> dict[str, ProviderCredential]:
        return dict(self._env) if tenant_id == OWNER_ID or self._share_env else {}

    async def _stored(self, tenant_id: str) -> list[tuple[ProviderCredential, str | None, str]]:
        rows = await self._db.read("SELECT provider, secret, base_url, key_last4, updated_at"
                                   " FROM provider_credentials WHERE tenant_id = ?"
                                   " AND auth_method = 'api_key'", (tenant_id,))
        out = []
        for r in rows:
            secret = json.loads(self._box.open(r["secret"]))
            cred = ProviderCredential(r["provider"], secret["api_key"], r["base_url"], "api",
                                      secret.get("extra") or {})
            out.append((cred, r["key_last4"] or None, r["updated_at"]))
        return out

    async def credentials(self, tenant_id: str) -> dict[str, ProviderCredential]:
        merged = self._env_for(tenant_id)
        merged.update({c.provider: c for c, _m, _u in await self._stored(tenant_id)})
        return merged

    async def list(self, tenant_id: str) -> list[ProviderEntry]:
        entries = {n: ProviderEntry(n, "env", mask(c.api_key), c.base_url, self._started_at)
                   for n, c in self._env_for(tenant_id).items()}
        for cred, masked, updated in await self._stored(tenant_id):
            entries[cred.provider] = ProviderEntry(cred.provider, "api", masked, cred.base_url, updated)
        return [entries[n] for n in KNOWN if n in entries]

    async def put(self, tenant_id: str, name: str, api_key: str | None, base_url: str | None) -> ProviderEntry:
        """Store (replace) the tenant's credential; ``api_key`` None only for a keyless provider (Ollama)."""
        check_known(name)
        stamp = now_iso()
        extra: dict[str, Any] = {}
        if name == "bedrock":  # an API-set Bedrock key is a Bedrock API key (bearer), as AWS_BEARER_TOKEN_BEDROCK
            extra = {"auth": "bearer", "region": self._aws_region or DEFAULT_REGION}
        sealed = self._box.seal(json.dumps({"api_key": api_key, "extra": extra}).encode())
        masked = mask(api_key) or ("****" if api_key else None)

        def upsert(conn: Conn) -> None:
            conn.execute("INSERT INTO provider_credentials (tenant_id, provider, secret, base_url, key_last4,"
                         " updated_at) VALUES (?,?,?,?,?,?)"
                         " ON CONFLICT (tenant_id, provider, auth_method) DO UPDATE SET"
                         " secret = excluded.secret, base_url = excluded.base_url,"
                         " key_last4 = excluded.key_last4, updated_at = excluded.updated_at",
                         (tenant_id, name, sealed, base_url, masked or "", stamp))

        await self._db.write(upsert)
        return ProviderEntry(name, "api", masked, base_url, stamp)

    async def delete(self, tenant_id: str, name: str) -> None:
        """Remove the tenant's API-set key; an env credential cannot be removed over the API."""
        check_known(name)

        def remove(conn: Conn) -> int:
            return conn.execute("DELETE FROM provider_credentials WHERE tenant_id = ? AND provider = ?"
                                " AND auth_method = 'api_key'",
                                (tenant_id, name)).rowcount

        if await self._db.write(remove) == 0:
            if name in self._env_for(tenant_id):
                raise Conflict("PROVIDER_FROM_ENV", f"{name} is configured by the server's environment;"
                               " unset its variable and restart to remove it")
            raise NotFound("PROVIDER_NOT_CONFIGURED", f"{name} has no stored credential")
