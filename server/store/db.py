"""SQLite behind one writer thread: every write is a function run in a group-committed transaction.

Why a writer thread: the agent loop appends thousands of events per turn; committing each would cost a
transaction apiece and block the event loop. Writes queue up, the thread runs all that are waiting inside one
transaction (a savepoint each, so one failing write does not undo its neighbours) and commits once. Reads use
a separate connection on the caller's thread; WAL lets them run while the writer commits.

The interface (``read``, ``write``, ``write_nowait``) is what a PostgreSQL backend would implement with a
connection pool: see docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from server.store.migrations import migrate

log = logging.getLogger(__name__)
T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], Any]
_STOP = object()
MAX_BATCH = 2000


class StoreClosed(RuntimeError):
    """A write after ``close()``."""


def _connect(path: Path, busy_timeout_s: float = 30.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    return conn


class Database:
    """One SQLite file: a read connection for the event loop, one writer thread that group-commits."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s  # how long a write waits for another process's lock
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._closed = False

    def open(self) -> None:
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
        self._thread = threading.Thread(target=self._run, args=(writer,), name="store-writer", daemon=True)
        self._thread.start()

    def read(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """Run a query on the read connection (fast, local; called on the event loop)."""
        if self._reader is None:
            raise StoreClosed("the store is not open")
        return self._reader.execute(sql, params).fetchall()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the next group commit; returns its result once committed."""
        fut: Future[T] = Future()
        self._put(fn, fut)
        return await asyncio.wrap_future(fut)

    def write_nowait(self, fn: WriteFn, after_commit: Callable[[], None] | None = None) -> None:
        """Queue a write without waiting; ``after_commit`` runs on the writer thread once it is durable."""
        self._put(fn, None, after_commit)

    def flush(self) -> None:
        """Block until every write queued so far is committed (for shutdown and tests)."""
        fut: Future[None] = Future()
        self._put(lambda _c: None, fut)
        fut.result(timeout=60)

    def _put(self, fn: WriteFn, fut: Future[Any] | None, after: Callable[[], None] | None = None) -> None:
        if self._closed or self._thread is None:
            raise StoreClosed("the store is closed")
        self._queue.put((fn, fut, after))

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the connections."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=60)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _run(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                item = self._queue.get()
                stop = item is _STOP
                batch = [] if stop else [item]
                while len(batch) < MAX_BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    batch.append(nxt)
                if batch:
                    try:
                        self._commit(conn, batch)
                    except Exception as exc:  # BEGIN failed (disk I/O, a lock held too long): fail, go on
                        log.exception("store batch failed")
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                        for _fn, fut, _after in batch:
                            if fut is not None and not fut.done():
                                fut.set_exception(exc)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        results: list[tuple[Future[Any] | None, Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        for fn, fut, _after in batch:
            conn.execute("SAVEPOINT op")
            try:
                value = fn(conn)
            except Exception as exc:  # one failing write must not undo the others
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                if fut is None:
                    log.exception("background store write failed")
                results.append((fut, None, exc))
            else:
                conn.execute("RELEASE op")
                results.append((fut, value, None))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as commit_error:  # pragma: no cover - disk full or similar
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            log.exception("store commit failed")
            results = [(fut, None, commit_error) for fut, _v, _e in results]
        for (fut, value, error), (_fn, _fut, after) in zip(results, batch, strict=True):
            if fut is not None and not fut.cancelled():
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(value)
            if after is not None:
                try:
                    after()
                except Exception:
                    log.exception("after-commit callback failed")
