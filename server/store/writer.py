"""One writer thread per store: every write is a function run in a group-committed transaction.

Why a writer thread: the agent loop appends thousands of events per turn; committing each would cost a
transaction apiece and block the event loop. Writes queue up, the thread runs all that are waiting inside one
transaction (a savepoint each, so one failing write does not undo its neighbours) and commits once, in queue
order, so ``write_nowait`` keeps the order it was called in. Both backends use it with their own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from server.store.sql import Conn
from server.store.store import StoreClosed, WriteFn

log = logging.getLogger(__name__)
T = TypeVar("T")
_STOP = object()
MAX_BATCH = 2000


class GroupCommitWriter:
    """Runs queued write functions on ``connect()``'s connection; ``begin`` is the dialect's BEGIN."""

    def __init__(self, connect: Callable[[], Conn], *, begin: str, close_conn: Callable[[Conn], None],
                 broken: Callable[[Conn], bool] = lambda _c: False) -> None:
        self._connect = connect
        self._begin = begin
        self._close_conn = close_conn
        self._broken = broken  # a lost connection (PostgreSQL restarted) is replaced before the next batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, conn: Conn) -> None:
        self._thread = threading.Thread(target=self._run, args=(conn,), name="store-writer", daemon=True)
        self._thread.start()

    async def write(self, fn: Callable[[Conn], T]) -> T:
        fut: Future[T] = Future()
        self._put(fn, fut)
        return await asyncio.wrap_future(fut)

    def write_nowait(self, fn: WriteFn, after_commit: Callable[[], None] | None = None) -> None:
        self._put(fn, None, after_commit)

    async def flush(self) -> None:
        await self.write(lambda _c: None)

    def _put(self, fn: WriteFn, fut: Future[Any] | None, after: Callable[[], None] | None = None) -> None:
        if self._closed or self._thread is None:
            raise StoreClosed("the store is closed")
        self._queue.put((fn, fut, after))

    def stop(self) -> None:
        """Commit what is queued, stop the thread (blocks; call it off the loop)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=60)

    def _run(self, conn: Conn) -> None:
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
                        conn = self._begin_on(conn)
                        self._commit(conn, batch)
                    except Exception as exc:  # BEGIN failed (disk I/O, a lock held too long, lost server)
                        log.exception("store batch failed")
                        with contextlib.suppress(Exception):
                            conn.execute("ROLLBACK")
                        for _fn, fut, _after in batch:
                            if fut is not None and not fut.done():
                                fut.set_exception(exc)
                if stop:
                    return
        finally:
            self._close_conn(conn)

    def _begin_on(self, conn: Conn) -> Conn:
        """BEGIN on the connection, or on a new one when it turns out dead (the server restarted while the
        writer was idle: nothing of the batch has run yet, so it goes through on the new connection)."""
        conn = self._ensure(conn)
        try:
            conn.execute(self._begin)
        except Exception:
            if not self._broken(conn):
                raise
            conn = self._ensure(conn)
            conn.execute(self._begin)
        return conn

    def _ensure(self, conn: Conn) -> Conn:
        if not self._broken(conn):
            return conn
        with contextlib.suppress(Exception):
            self._close_conn(conn)
        try:
            return self._connect()
        except Exception:
            log.exception("store reconnect failed")
            return conn  # the batch fails with the old connection's error; the next one tries again

    def _commit(self, conn: Conn, batch: list[Any]) -> None:
        """Run the batch in the transaction ``_begin_on`` opened, a savepoint each, and commit it."""
        results: list[tuple[Future[Any] | None, Any, BaseException | None]] = []
        for fn, fut, _after in batch:
            conn.execute("SAVEPOINT op")
            try:
                value = fn(conn)
            except Exception as exc:  # one failing write must not undo the others
                conn.execute("ROLLBACK TO SAVEPOINT op")
                conn.execute("RELEASE SAVEPOINT op")
                if fut is None:
                    log.exception("background store write failed")
                results.append((fut, None, exc))
            else:
                conn.execute("RELEASE SAVEPOINT op")
                results.append((fut, value, None))
        try:
            conn.execute("COMMIT")
        except Exception as commit_error:  # pragma: no cover - disk full, lost server
            with contextlib.suppress(Exception):
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
