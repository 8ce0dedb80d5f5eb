"""SQLite, the embedded default: one file, a read connection on the loop, one group-committing writer thread.

Reads run on the caller's thread on their own connection (a local read of a few rows is faster than a hop to
a thread; WAL lets them run while the writer commits); they are ``async`` only to share ``Store``'s signature
with PostgreSQL. Writes go through ``GroupCommitWriter`` (server/store/writer.py).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from server.store.migrations import migrate
from server.store.sql import Conn, Dialect, Params, Row
from server.store.store import StoreClosed, WriteFn
from server.store.writer import GroupCommitWriter

T = TypeVar("T")
__all__ = ["Database", "StoreClosed"]


class SqliteConn(sqlite3.Connection):
    """A ``sqlite3.Connection`` that says its dialect, so it satisfies ``Conn``."""

    dialect: Dialect = "sqlite"


def _connect(path: Path, busy_timeout_s: float = 30.0) -> SqliteConn:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s,
                           factory=SqliteConn)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    return conn


def _close(conn: Conn) -> None:
    if isinstance(conn, sqlite3.Connection):
        conn.close()


class Database:
    """One SQLite file behind ``Store``."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s  # how long a write waits for another process's lock
        self._reader: sqlite3.Connection | None = None
        self._writer = GroupCommitWriter(lambda: _connect(self.path, self._busy_timeout_s),
                                         begin="BEGIN IMMEDIATE", close_conn=_close)

    async def open(self) -> None:
        self.open_sync()

    def open_sync(self) -> None:
        """Create the file readable by this user only, migrate it, start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        writer = _connect(self.path, self._busy_timeout_s)
        migrate(writer)
        for suffix in ("-wal", "-shm"):
            side = Path(str(self.path) + suffix)
            if side.exists():
                os.chmod(side, 0o600)
        self._reader = _connect(self.path)
        self._writer.start(writer)

    async def read(self, sql: str, params: Params = ()) -> list[Row]:
        if self._reader is None:
            raise StoreClosed("the store is not open")
        rows: list[Row] = self._reader.execute(sql, params).fetchall()
        return rows

    async def write(self, fn: Callable[[Conn], T]) -> T:
        return await self._writer.write(fn)

    def write_nowait(self, fn: WriteFn, after_commit: Callable[[], None] | None = None) -> None:
        self._writer.write_nowait(fn, after_commit)

    async def flush(self) -> None:
        await self._writer.flush()

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        """Commit what is queued, stop the writer, close the connections (for synchronous shutdown paths)."""
        self._writer.stop()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
