"""The single writer: one thread owns the write connection, numbers and chains records, and commits in groups.

Callers hand over a draft (``records.started_draft``/``finished_draft``) and await a future; the thread takes
everything queued, assigns each tenant's next seq, seals the records into their chains, writes them and the
updated signed heads in ONE transaction, and only after COMMIT resolves the futures. One commit (one fsync
with ``synchronous=FULL``) is shared by every call that arrived while the previous one was on disk.

At start the chain state comes from the signed heads, never from the records alone (``recovery.py``): if
records were removed from the tail, new records continue after the head, so the gap stays visible to
``verify`` instead of being sealed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.audit import db
from server.audit.checkpoint import Checkpointer
from server.audit.records import canonical_json, genesis_hash, head_mac, seal, utc_timestamp
from server.audit.recovery import reconcile

log = logging.getLogger(__name__)


class AuditWriteError(RuntimeError):
    """The record could not be made durable (disk full, database locked, log closed)."""


@dataclass
class _Item:
    tenant: str
    draft: dict[str, Any]
    future: asyncio.Future[int]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class Writer:
    """Owns the write connection; ``submit`` from any event loop, ``stop`` drains the queue then closes."""

    def __init__(self, path: Path, key: bytes, *, synchronous: str = "NORMAL", max_batch: int = 512) -> None:
        self._path = path
        self._key = key
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._state: dict[str, tuple[int, str]] = {}
        self._last_ts = ""
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._checkpointer = Checkpointer(path)
        self._stopping = False
        self.warnings: list[str] = []
        self.commits = 0

    def start(self) -> None:
        self._conn = db.connect(self._path, synchronous=self._synchronous)
        try:
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer thread does it instead
            reconciled = reconcile(self._conn, self._key)
        except BaseException:
            self._conn.close()
            raise
        self._state = reconciled.state
        for problem in reconciled.problems:
            self._warn(problem)
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        self._checkpointer.start()

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.error("audit log %s: %s", self._path, message)

    def submit(self, tenant: str, draft: dict[str, Any]) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._lock:  # no item can slip in behind the stop marker
            if self._stopping or self._thread is None or not self._thread.is_alive():
                raise AuditWriteError("the audit log is not open")
            self._queue.put(_Item(tenant, draft, future, loop))
        return future

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        with self._lock:
            self._stopping = True
            self._queue.put(_STOP)
        self._thread.join(timeout)
        self._checkpointer.stop(timeout)
        if self._thread.is_alive():
            log.error("audit writer did not stop within %.0f s", timeout)
        elif self._conn is not None:
            self._conn.close()  # the last connection to close checkpoints the WAL into the file
        self._thread = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Item] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Item)
                batch.append(item)
                if len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._commit(batch)
                except Exception as exc:  # never let the one writer die with callers waiting
                    log.exception("audit writer failed a batch")
                    for pending in batch:
                        self._resolve(pending, None, AuditWriteError(f"audit write failed: {exc!r}"))
        self._fail_leftovers()

    def _fail_leftovers(self) -> None:
        """Whatever was queued after the stop marker (another thread racing close) fails instead of hanging."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Item):
                self._resolve(item, None, AuditWriteError("the audit log was closed"))

    def _next_ts(self) -> str:
        """Now, but never earlier than the last record written (the clock may step back)."""
        ts = max(utc_timestamp(), self._last_ts)
        self._last_ts = ts
        return ts

    def _commit(self, batch: list[_Item]) -> None:
        assert self._conn is not None
        heads: dict[str, tuple[int, str]] = {}
        rows: list[tuple[Any, ...]] = []
        seqs: list[int] = []
        for item in batch:
            tenant = item.tenant
            seq, prev = heads.get(tenant) or self._state.get(tenant) or (0, genesis_hash(tenant))
            record = seal(item.draft, seq=seq + 1, ts=self._next_ts(), prev_hash=prev)
            rows.append((item.tenant, *(record[c] for c in db.COLUMNS),
                         canonical_json(record).decode("utf-8")))
            heads[item.tenant] = (seq + 1, record["hash"])
            seqs.append(seq + 1)
        signed = [(t, s, h, head_mac(self._key, t, s, h)) for t, (s, h) in heads.items()]
        if self._conn.in_transaction:  # a failure in the middle of an earlier batch
            self._conn.execute("ROLLBACK")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT INTO records "
                "(tenant, seq, ts, session_id, call_id, phase, tool, decision, hash, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._conn.executemany(
                "INSERT INTO heads (tenant, seq, hash, mac) VALUES (?, ?, ?, ?) ON CONFLICT (tenant) "
                "DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac", signed)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            error = AuditWriteError(f"audit write failed: {exc}")
            _settle_from_thread([(item, None, error) for item in batch])
            return
        self.commits += 1
        self._state.update(heads)
        self._resolve_batch(batch, seqs)

    @staticmethod
    def _resolve(item: _Item, seq: int | None, error: Exception | None) -> None:
        _settle_from_thread([(item, seq, error)])

    @staticmethod
    def _resolve_batch(batch: list[_Item], seqs: list[int]) -> None:
        _settle_from_thread([(item, seq, None) for item, seq in zip(batch, seqs, strict=True)])


Outcome = tuple[_Item, int | None, Exception | None]


def _settle_from_thread(outcomes: list[Outcome]) -> None:
    """Wake each waiting event loop once per batch (not once per record) to resolve its futures."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, mine in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that event loop is closed; nobody is waiting
            loop.call_soon_threadsafe(_settle, mine)


def _settle(outcomes: list[Outcome]) -> None:
    for item, seq, error in outcomes:
        if item.future.done():  # the caller was cancelled; its record is written all the same
            continue
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(seq if seq is not None else 0)
