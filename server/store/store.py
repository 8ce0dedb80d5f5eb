"""The storage interface every repository is written against; SQLite and PostgreSQL both implement it.

Reads are awaited (PostgreSQL answers from its async pool; SQLite's local read is fast enough to run on the
loop but keeps the same signature). Writes are plain functions of a ``Conn`` run inside a transaction by the
backend's group-committing writer, so a repository's write is one function whatever the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from server.store.sql import Conn, Dialect, Params, Row

T = TypeVar("T")
WriteFn = Callable[[Conn], Any]


class StoreClosed(RuntimeError):
    """A read or write before ``open()`` or after ``close()``."""


class Store(Protocol):
    """One database: awaited reads, functions as writes (group-committed, a savepoint each)."""

    dialect: Dialect

    async def open(self) -> None:
        """Connect and bring the schema to the newest version."""

    async def read(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one query; our ``?`` SQL style (server/store/sql.py)."""

    async def write(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn(conn)`` in the next group commit; returns its result once committed."""

    def write_nowait(self, fn: WriteFn, after_commit: Callable[[], None] | None = None) -> None:
        """Queue a write in order without waiting; ``after_commit`` runs on the writer thread once durable."""

    async def flush(self) -> None:
        """Wait until every write queued so far is committed."""

    async def close(self) -> None:
        """Commit what is queued and release the connections."""
