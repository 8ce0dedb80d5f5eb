"""PostgreSQL behind ``Store``: reads from psycopg's async pool, writes through one group-committing writer.

Selected by ``OPENANALYST_DATABASE_URL=postgresql://…`` (server/store/open.py). Why psycopg 3 with
psycopg_pool rather than asyncpg: it is the maintained reference driver with a native async API *and* a
synchronous one, so reads never block the event loop while the writer thread (the same ``GroupCommitWriter``
SQLite uses, which keeps ``write_nowait``'s order and the after-commit callbacks the event log relies on) and
the migrations run ordinary synchronous code on their own connection; asyncpg is async only. psycopg also
brings ``LISTEN/NOTIFY`` for the replica slice.

Our SQL's ``?`` placeholders become ``%s`` here (server/store/sql.py); rows come back as ``PgRow``, which
reads by position and by column name like ``sqlite3.Row``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import RowMaker
from psycopg_pool import AsyncConnectionPool

from server.store.migrations import migrate_postgresql
from server.store.sql import Conn, Dialect, Params, Row, to_pyformat
from server.store.store import StoreClosed, WriteFn
from server.store.writer import GroupCommitWriter

T = TypeVar("T")
_sql = functools.lru_cache(maxsize=1024)(to_pyformat)


class PgRow:
    """One result row, by position or column name (the ``Row`` protocol)."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str, /) -> Any:
        return self._values[key] if isinstance(key, int) else self._values[self._index[key]]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def keys(self) -> list[str]:
        return list(self._index)

    def __repr__(self) -> str:
        return f"PgRow({tuple(self._values)!r})"


def pg_row(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> RowMaker[PgRow]:
    """psycopg row factory making ``PgRow``s."""
    names = [c.name for c in cursor.description or ()]
    index = {name: i for i, name in enumerate(names)}
    return lambda values: PgRow(values, index)


class PgConn:
    """The writer's connection as a ``Conn``: our SQL style in, psycopg underneath."""

    dialect: Dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection[PgRow]) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Params = (), /) -> psycopg.Cursor[PgRow]:
        return self.raw.execute(_sql(sql), params)

    def executemany(self, sql: str, params: Iterable[Params], /) -> psycopg.Cursor[PgRow]:
        cur = self.raw.cursor()
        cur.executemany(_sql(sql), params)
        return cur


def _connect(url: str) -> PgConn:
    return PgConn(psycopg.connect(url, autocommit=True, row_factory=pg_row))


def _close(conn: Conn) -> None:
    if isinstance(conn, PgConn):
        conn.raw.close()


def _broken(conn: Conn) -> bool:
    return isinstance(conn, PgConn) and (conn.raw.closed or conn.raw.broken)


class PostgresStore:
    """One PostgreSQL database behind ``Store``."""

    dialect: Dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[PgRow]] | None = None
        self._writer = GroupCommitWriter(lambda: _connect(self.url), begin="BEGIN", close_conn=_close,
                                         broken=_broken)

    async def open(self) -> None:
        """Migrate (under an advisory lock), start the writer, open the read pool."""
        writer = await asyncio.to_thread(self._open_writer)
        try:
            pool: AsyncConnectionPool[psycopg.AsyncConnection[PgRow]] = AsyncConnectionPool(
                self.url, min_size=1, max_size=self._pool_size, open=False,
                connection_class=psycopg.AsyncConnection[PgRow],
                kwargs={"autocommit": True, "row_factory": pg_row})
            await pool.open(wait=True, timeout=30)
        except BaseException:
            _close(writer)
            raise
        self._pool = pool
        self._writer.start(writer)

    def _open_writer(self) -> PgConn:
        conn = _connect(self.url)
        try:
            migrate_postgresql(conn.raw)
        except BaseException:
            conn.raw.close()
            raise
        return conn

    async def read(self, sql: str, params: Params = ()) -> list[Row]:
        """One query on a pooled connection. When the server dropped it (a restart drops them all, an admin
        may terminate one), the pool tests its idle connections, replaces the dead ones, and the read, having
        changed nothing, is tried once more."""
        if self._pool is None:
            raise StoreClosed("the store is not open")
        try:
            return await self._read(self._pool, sql, params)
        except psycopg.OperationalError:
            await self._pool.check()
            return await self._read(self._pool, sql, params)

    @staticmethod
    async def _read(pool: AsyncConnectionPool[psycopg.AsyncConnection[PgRow]], sql: str,
                    params: Params) -> list[Row]:
        async with pool.connection() as conn:
            cur = await conn.execute(_sql(sql), params)
            rows: list[Row] = list(await cur.fetchall())
            return rows

    async def write(self, fn: Callable[[Conn], T]) -> T:
        return await self._writer.write(fn)

    def write_nowait(self, fn: WriteFn, after_commit: Callable[[], None] | None = None) -> None:
        self._writer.write_nowait(fn, after_commit)

    async def flush(self) -> None:
        await self._writer.flush()

    async def close(self) -> None:
        await asyncio.to_thread(self._writer.stop)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
