"""Migration 3 keeps every stored key (as auth_method 'api_key') and lets a sign-in sit beside a manual key;
the sealed token is not readable in the database file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from server.account.tokens import OAuthToken, OAuthTokenStore
from server.store.credentials import CredentialStore
from server.store.db import Database
from server.store.migrations import MIGRATIONS
from server.store.secretbox import SecretBox

TOKEN = OAuthToken("oat-UNIT-access-0123456789", "ort-UNIT-refresh-0123456789", "a@example.com", 2e9)


def test_upgrade_keeps_keys_and_adds_the_sign_in(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    box = SecretBox(tmp_path / "secret.key")
    with sqlite3.connect(path) as conn:  # a database as the server before migration 3 left it
        for number, step in enumerate(MIGRATIONS[:2], start=1):
            conn.executescript(f"BEGIN;\n{step.sqlite}\nPRAGMA user_version = {number};\nCOMMIT;")
        conn.execute("INSERT INTO provider_credentials VALUES (?,?,?,?,?,?)",
                     ("team", "openanalyst", box.seal(b'{"api_key": "sk-oa-v1-old-0123456789", "extra": {}}'),
                      None, "****6789", "2026-01-01T00:00:00Z"))
    db = Database(path)
    db.open_sync()
    try:
        store = CredentialStore(db, box, [], share_env=False, started_at="now")
        tokens = OAuthTokenStore(db, box)

        async def scenario() -> None:
            assert (await store.credentials("team"))["openanalyst"].api_key == "sk-oa-v1-old-0123456789"
            await tokens.save("team", TOKEN)
            await tokens.set_preference("team", "manual")
            on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("server.db*"))
            assert b"a@example.com" not in on_disk and b"oat-UNIT" not in on_disk  # sealed, email too
            # The sign-in does not replace, list or delete the manual key, nor the reverse.
            assert (await store.credentials("team"))["openanalyst"].api_key == "sk-oa-v1-old-0123456789"
            assert [e.name for e in await store.list("team")] == ["openanalyst"]
            assert await tokens.get("team") == TOKEN and await tokens.preference("team") == "manual"
            await store.delete("team", "openanalyst")
            assert await tokens.get("team") == TOKEN and await store.credentials("team") == {}
            await tokens.delete("team")
            assert await tokens.get("team") is None and await tokens.preference("team") == "manual"
            assert "UNIT" not in repr(await tokens.get("team")) and "UNIT" not in repr(TOKEN)

        asyncio.run(scenario())
    finally:
        db.close_sync()
