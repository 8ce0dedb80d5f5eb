"""The SQLite store: versioned migrations, group commit, todos, and failure isolation between writes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from server.sessions.store import SessionStore
from server.store.db import Database
from server.store.migrations import MIGRATIONS, migrate

pytestmark = pytest.mark.anyio


async def test_migrates_old_database(tmp_path: Path) -> None:
    """A database at schema 1 is brought to the newest version, keeping its rows."""
    path = tmp_path / "server.db"
    conn = sqlite3.connect(path)
    conn.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
    conn.execute("INSERT INTO sessions VALUES ('sess_x','owner',NULL,NULL,NULL,'{}','t','t')")
    conn.commit()
    conn.close()
    db = Database(path)
    db.open()
    try:
        assert db.read("PRAGMA user_version")[0][0] == len(MIGRATIONS)
        store = SessionStore(db)
        assert store.get("owner", "sess_x").id == "sess_x"
        await store.set_todos("owner", "sess_x", [{"content": "a", "status": "pending"}])
        assert store.get_todos("owner", "sess_x") == [{"content": "a", "status": "pending"}]
    finally:
        db.close()


def test_refuses_newer_schema(tmp_path: Path) -> None:
    """A database from a newer server is refused with a clear error instead of being damaged."""
    conn = sqlite3.connect(tmp_path / "server.db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this server"):
        migrate(conn)


async def test_group_commit_and_isolation(tmp_path: Path) -> None:
    """Many concurrent writes commit together; one failing write does not undo its neighbours."""
    db = Database(tmp_path / "server.db")
    db.open()
    try:
        def insert(i: int) -> None:
            def fn(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO api_keys (id, secret_hash, tenant_id, created_at) VALUES (?,?,?,?)",
                             (f"k{i}", "h", None, "t"))
                if i == 7:
                    raise ValueError("bad write")
            return fn

        results = await asyncio.gather(*(db.write(insert(i)) for i in range(50)), return_exceptions=True)
        assert [i for i, r in enumerate(results) if isinstance(r, Exception)] == [7]
        ids = {r[0] for r in db.read("SELECT id FROM api_keys")}
        assert ids == {f"k{i}" for i in range(50) if i != 7}
    finally:
        db.close()


async def test_todos_are_tenant_scoped(tmp_path: Path) -> None:
    """Another tenant cannot read or write a session's todos."""
    db = Database(tmp_path / "server.db")
    db.open()
    try:
        store = SessionStore(db)
        record = await store.create("a")
        with pytest.raises(Exception, match="no session"):
            await store.set_todos("b", record.id, [])
        with pytest.raises(Exception, match="no session"):
            store.get_todos("b", record.id)
        assert store.get_todos("a", record.id) == []
    finally:
        db.close()


async def test_writer_survives_a_failed_batch(tmp_path: Path) -> None:
    """When another process holds the write lock past the busy timeout, the waiting writes fail with an
    error and the writer thread keeps serving later writes."""
    db = Database(tmp_path / "server.db", busy_timeout_s=0.2)
    db.open()
    other = sqlite3.connect(tmp_path / "server.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO api_keys VALUES ('k', 'h', NULL, 't')")

        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await db.write(write)
        other.execute("ROLLBACK")
        await db.write(write)
        assert db.read("SELECT id FROM api_keys")[0][0] == "k"
    finally:
        other.close()
        db.close()
