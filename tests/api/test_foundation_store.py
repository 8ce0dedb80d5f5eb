"""The store on both backends (SQLite and a real PostgreSQL): versioned migrations, group commit, todos,
failure isolation between writes, ordering; and SQLite's own upgrade path and lock handling."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg
import pytest
from pg_support import PostgresCluster, postgres_cluster
from store_support import StoreFactory

from server.sessions.store import SessionStore
from server.store.db import Database
from server.store.migrations import MIGRATIONS, migrate, migrate_postgresql
from server.store.postgres import PostgresStore
from server.store.sql import Conn

pytestmark = pytest.mark.anyio


async def test_migrates_old_database(tmp_path: Path) -> None:
    """A SQLite database at schema 1 is brought to the newest version, keeping its rows."""
    path = tmp_path / "server.db"
    conn = sqlite3.connect(path)
    conn.executescript(f"BEGIN;\n{MIGRATIONS[0].sqlite}\nPRAGMA user_version = 1;\nCOMMIT;")
    conn.execute("INSERT INTO sessions VALUES ('sess_x','owner',NULL,NULL,NULL,'{}','t','t')")
    conn.commit()
    conn.close()
    db = Database(path)
    await db.open()
    try:
        assert (await db.read("PRAGMA user_version"))[0][0] == len(MIGRATIONS)
        store = SessionStore(db)
        assert (await store.get("owner", "sess_x")).id == "sess_x"
        await store.set_todos("owner", "sess_x", [{"content": "a", "status": "pending"}])
        assert await store.get_todos("owner", "sess_x") == [{"content": "a", "status": "pending"}]
    finally:
        await db.close()


def test_refuses_newer_schema(tmp_path: Path) -> None:
    """A SQLite database from a newer server is refused with a clear error instead of being damaged."""
    conn = sqlite3.connect(tmp_path / "server.db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this server"):
        migrate(conn)


async def test_postgresql_records_its_version_and_refuses_a_newer_one(postgres: PostgresCluster) -> None:
    """PostgreSQL keeps the version in schema_version; a second open migrates nothing; a newer schema is
    refused. Two servers migrating one empty database at once apply every step once (the advisory lock)."""
    url = postgres.database()
    try:
        def migrate_once() -> int:
            with psycopg.connect(url, autocommit=True) as conn:
                return migrate_postgresql(conn)

        assert await asyncio.gather(*(asyncio.to_thread(migrate_once) for _ in range(3))) == [len(MIGRATIONS)] * 3
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
            conn.execute("UPDATE schema_version SET version = version + 1")
        with pytest.raises(RuntimeError, match="newer than this server"):
            migrate_once()
    finally:
        postgres.drop(url)


async def test_group_commit_and_isolation(make_store: StoreFactory) -> None:
    """Many concurrent writes commit together; one failing write does not undo its neighbours."""
    async with make_store() as db:
        def insert(i: int):  # type: ignore[no-untyped-def]
            def fn(conn: Conn) -> None:
                conn.execute("INSERT INTO api_keys (id, secret_hash, tenant_id, created_at) VALUES (?,?,?,?)",
                             (f"k{i}", "h", None, "t"))
                if i == 7:
                    raise ValueError("bad write")
                if i == 9:
                    conn.execute("INSERT INTO api_keys (id, secret_hash, tenant_id, created_at) VALUES (?,?,?,?)",
                                 ("k8", "h", None, "t"))  # a constraint error: this write alone is undone
            return fn

        results = await asyncio.gather(*(db.write(insert(i)) for i in range(50)), return_exceptions=True)
        assert [i for i, r in enumerate(results) if isinstance(r, Exception)] == [7, 9]
        ids = {r[0] for r in await db.read("SELECT id FROM api_keys")}
        assert ids == {f"k{i}" for i in range(50) if i not in (7, 9)}


async def test_write_nowait_keeps_order_and_reports_commits(make_store: StoreFactory) -> None:
    """Queued writes commit in the order they were queued, each after-commit callback once they are durable."""
    async with make_store() as db:
        done: list[int] = []
        for i in range(300):
            db.write_nowait(lambda c, i=i: c.execute(
                "INSERT INTO events (session_id, seq, type, data, created_at) VALUES (?,?,?,?,?)",
                ("s", i, "t", "{}", 1.5 + i)), lambda i=i: done.append(i))
        await db.flush()
        assert done == list(range(300))
        rows = await db.read("SELECT seq, created_at FROM events WHERE session_id = ? ORDER BY seq", ("s",))
        assert [(r["seq"], r["created_at"]) for r in rows] == [(i, 1.5 + i) for i in range(300)]


async def test_todos_are_tenant_scoped(make_store: StoreFactory) -> None:
    """Another tenant cannot read or write a session's todos."""
    async with make_store() as db:
        store = SessionStore(db)
        record = await store.create("a")
        with pytest.raises(Exception, match="no session"):
            await store.set_todos("b", record.id, [])
        with pytest.raises(Exception, match="no session"):
            await store.get_todos("b", record.id)
        assert await store.get_todos("a", record.id) == []


async def test_sessions_and_messages_survive_a_reopen(make_store: StoreFactory) -> None:
    """What one store wrote, a new one on the same database reads: messages in insertion order, the session
    limit counted in the transaction, a delete taking messages and events along."""
    async with make_store() as db:
        store = SessionStore(db)
        first = await store.create("t", title="one", metadata={"k": "v"})
        ids = [await store.append_message("t", first.id, "user" if i % 2 == 0 else "assistant",
                                          [{"type": "text", "text": f"m{i}"}]) for i in range(12)]
        await store.create("t", max_sessions=2)
        with pytest.raises(Exception, match="already has 2 sessions"):
            await store.create("t", max_sessions=2)
    async with make_store() as db:
        store = SessionStore(db)
        assert [m["id"] for m in await store.list_messages("t", first.id)] == ids
        _records, total = await store.page("t", 1, 10)
        assert total == 2 and (await store.get("t", first.id)).metadata == {"k": "v"}
        await store.delete("t", first.id)
        assert (await db.read("SELECT COUNT(*) FROM messages WHERE session_id = ?", (first.id,)))[0][0] == 0


async def test_writer_survives_a_failed_batch(tmp_path: Path) -> None:
    """When another process holds SQLite's write lock past the busy timeout, the waiting writes fail with an
    error and the writer thread keeps serving later writes."""
    db = Database(tmp_path / "server.db", busy_timeout_s=0.2)
    await db.open()
    other = sqlite3.connect(tmp_path / "server.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")

        def write(conn: Conn) -> None:
            conn.execute("INSERT INTO api_keys VALUES ('k', 'h', NULL, 't')")

        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await db.write(write)
        other.execute("ROLLBACK")
        await db.write(write)
        assert (await db.read("SELECT id FROM api_keys"))[0][0] == "k"
    finally:
        other.close()
        await db.close()


async def test_postgresql_writer_reconnects(postgres: PostgresCluster) -> None:
    """A PostgreSQL writer whose connection was cut (an admin terminated it) goes on, on a new connection."""
    url = postgres.database()
    db = PostgresStore(url)
    await db.open()
    try:
        await db.write(lambda c: c.execute("INSERT INTO api_keys VALUES ('a', 'h', NULL, 't')"))
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        await db.write(lambda c: c.execute("INSERT INTO api_keys VALUES ('b', 'h', NULL, 't')"))
        assert sorted(r[0] for r in await db.read("SELECT id FROM api_keys")) == ["a", "b"]
    finally:
        await db.close()
        postgres.drop(url)


async def test_postgresql_store_survives_a_server_restart() -> None:
    """A restart of PostgreSQL (every connection dropped at once) while the store is idle costs nothing: the
    next read and the next write find their connections dead and go through on new ones. A cluster of its
    own, so the run's shared one is untouched."""
    with postgres_cluster() as cluster:
        db = PostgresStore(cluster.database(), pool_size=4)
        await db.open()
        try:
            await asyncio.gather(*(db.read("SELECT 1") for _ in range(8)))  # several pooled connections
            await db.write(lambda c: c.execute("INSERT INTO api_keys VALUES ('a', 'h', NULL, 't')"))
            await asyncio.to_thread(cluster.restart)
            assert [r[0] for r in await db.read("SELECT id FROM api_keys")] == ["a"]
            await db.write(lambda c: c.execute("INSERT INTO api_keys VALUES ('b', 'h', NULL, 't')"))
            assert sorted(r[0] for r in await db.read("SELECT id FROM api_keys")) == ["a", "b"]
        finally:
            await db.close()
