"""The single writer: one thread owns the write connection, numbers and chains records, and commits in groups.

Callers hand over a draft (``records.started_draft``/``finished_draft``) and await a future; the thread takes
everything queued, assigns each tenant's next seq, seals the records into their chains, writes them and the
updated signed heads in ONE transaction, and only after COMMIT resolves the futures. One commit (one fsync
with ``synchronous=FULL``) is shared by every call that arrived while the previous one was on disk.

At start the chain state comes from the signed heads, never from the records alone (``recovery.py``): if
records were removed from the tail, new records continue after the head, so the gap stays visible to
``verify`` instead of being sealed over. Then every call a crash left open is closed (``interrupted.py``).

Each transaction also extends the tenant's Merkle frontier (O(1) amortised), signs the new head (tenant, seq,
hash, root) with Ed25519 — one signature per tenant per group commit — and, every ``checkpoint_every``
records, stores a signed checkpoint. A checkpoint for a tenant that grew but reached no multiple of N is
written after ``checkpoint_interval_s`` by the same thread, between batches.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.audit import db
from server.audit.checkpoint import Checkpointer
from server.audit.interrupted import open_call_drafts
from server.audit.merkle import Frontier, leaf_hash
from server.audit.note import Checkpoint, origin_for, sign_checkpoint
from server.audit.records import canonical_json, genesis_hash, seal, utc_timestamp
from server.audit.recovery import ChainState, reconcile, sign_head
from server.audit.signing import SigningKey
from server.errors import ServiceUnavailable

log = logging.getLogger(__name__)


class AuditWriteError(ServiceUnavailable):
    """The record could not be made durable (disk full, database locked, log closed): the call is refused
    (503), never run unaudited. ``AUDIT_DISK_FULL`` when the data directory's disk is full."""

    def __init__(self, message: str, code: str = "AUDIT_UNAVAILABLE") -> None:
        super().__init__(code, message)


def _write_error(exc: sqlite3.Error) -> AuditWriteError:
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        return AuditWriteError(f"the audit log's disk is full, so no call can be audited: {exc}",
                               "AUDIT_DISK_FULL")
    return AuditWriteError(f"audit write failed: {exc}")


@dataclass(frozen=True)
class CheckpointPolicy:
    """When to emit a tenant's checkpoint: every ``every`` records, or ``interval_s`` after it last grew."""

    every: int = 1000
    interval_s: float = 60.0


@dataclass
class _Item:
    tenant: str
    draft: dict[str, Any]
    future: asyncio.Future[int]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class Writer:
    """Owns the write connection; ``submit`` from any event loop, ``stop`` drains the queue then closes."""

    def __init__(self, path: Path, key: SigningKey, *, legacy_key: bytes | None = None,
                 published: dict[str, int] | None = None, synchronous: str = "NORMAL", max_batch: int = 512,
                 checkpoints: CheckpointPolicy | None = None,
                 on_checkpoint: Callable[[], None] | None = None) -> None:
        self._path = path
        self._key = key
        self._legacy_key = legacy_key
        self._published = published or {}
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._policy = checkpoints or CheckpointPolicy()
        self._on_checkpoint = on_checkpoint
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._state: dict[str, ChainState] = {}
        self._checkpointed: dict[str, int] = {}  # tenant -> size of its latest checkpoint
        self._grew_at: dict[str, float] = {}  # tenant -> monotonic time it first grew past that checkpoint
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
            reconciled = reconcile(self._conn, self._key, self._legacy_key, self._published)
            self._state = reconciled.state
            self._checkpointed = db.last_checkpoints(self._conn)
            now = time.monotonic()
            self._grew_at = {t: now for t, st in self._state.items() if st.seq > self._checkpointed.get(t, 0)}
            for problem in reconciled.problems:
                self._warn(problem)
            for tenant in reconciled.upgraded:
                log.warning("audit log: tenant %r's v1 (HMAC) head re-signed with the Ed25519 key", tenant)
            interrupted = open_call_drafts(self._conn)
            if interrupted:
                self._write(interrupted)
                log.warning("audit log: closed %d call(s) left open by the previous run as INTERRUPTED",
                            len(interrupted))
        except BaseException:
            self._conn.close()
            raise
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
            try:
                item = self._queue.get(timeout=self._timer_wait())
            except queue.Empty:
                self._emit_due_checkpoints()
                continue
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
            self._emit_due_checkpoints()
        self._fail_leftovers()

    def _timer_wait(self) -> float | None:
        """How long the thread may sleep before a timed checkpoint is due (None: nothing pending)."""
        if not self._grew_at:
            return None
        due = min(self._grew_at.values()) + self._policy.interval_s
        return max(0.01, due - time.monotonic())

    def _emit_due_checkpoints(self) -> None:
        now = time.monotonic()
        due = [t for t, since in self._grew_at.items() if now - since >= self._policy.interval_s]
        if not due:
            return
        try:
            self._write([], extra_checkpoints=due)
        except sqlite3.Error as exc:  # disk full or locked: the next round tries again
            log.warning("audit checkpoint failed: %s", exc)
            for tenant in due:
                self._grew_at[tenant] = now

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
        try:
            seqs = self._write([(item.tenant, item.draft) for item in batch])
        except sqlite3.Error as exc:
            error = _write_error(exc)
            log.error("audit write refused %d record(s): %s", len(batch), error.message)
            _settle_from_thread([(item, None, error) for item in batch])
            return
        self._resolve_batch(batch, seqs)

    def _checkpoint_row(self, tenant: str, state: ChainState) -> tuple[str, int, str, str, str]:
        root = state.frontier.root()
        note = sign_checkpoint(Checkpoint(origin_for(self._key.public.name, tenant), state.seq, root), self._key)
        return tenant, state.seq, base64.b64encode(root).decode("ascii"), note, utc_timestamp()

    def _write(self, entries: list[tuple[str, dict[str, Any]]], *,
               extra_checkpoints: list[str] | None = None) -> list[int]:
        """Seal, write and sign in one transaction; the in-memory state moves only after COMMIT."""
        assert self._conn is not None
        touched: dict[str, ChainState] = {}
        rows: list[tuple[Any, ...]] = []
        seqs: list[int] = []
        for tenant, draft in entries:
            state = touched.get(tenant)
            if state is None:
                old = self._state.get(tenant) or ChainState(0, genesis_hash(tenant), Frontier())
                state = touched[tenant] = ChainState(old.seq, old.hash, old.frontier.copy())
            record = seal(draft, seq=state.seq + 1, ts=self._next_ts(), prev_hash=state.hash)
            rows.append((tenant, *(record.get(c) for c in db.COLUMNS), canonical_json(record).decode("utf-8")))
            state.seq, state.hash = record["seq"], record["hash"]
            state.frontier.append(leaf_hash(record["hash"]))
            seqs.append(state.seq)
        heads = [sign_head(self._key, tenant, state) for tenant, state in touched.items()]
        due = {t for t, st in touched.items() if st.seq - self._checkpointed.get(t, 0) >= self._policy.every}
        due.update(t for t in extra_checkpoints or () if t in self._state and t not in touched)
        final = self._state | touched
        checkpoint_rows = [self._checkpoint_row(t, final[t]) for t in sorted(due)
                           if final[t].seq > self._checkpointed.get(t, 0)]
        if self._conn.in_transaction:  # a failure in the middle of an earlier batch
            self._conn.execute("ROLLBACK")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT INTO records "
                "(tenant, seq, ts, session_id, call_id, phase, tool, decision, host, hash, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.write_heads(self._conn, heads)
            self._conn.executemany(
                "INSERT OR IGNORE INTO checkpoints (tenant, size, root, note, created_at) VALUES (?, ?, ?, ?, ?)",
                checkpoint_rows)
            self._conn.execute("COMMIT")
        except sqlite3.Error:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self.commits += 1
        self._state.update(touched)
        now = time.monotonic()
        for tenant in touched:
            self._grew_at.setdefault(tenant, now)
        for tenant, size, *_ in checkpoint_rows:
            self._checkpointed[tenant] = size
            self._grew_at.pop(tenant, None)
        for tenant in extra_checkpoints or ():  # nothing new to checkpoint: stop the timer for it
            if self._checkpointed.get(tenant, 0) >= self._state[tenant].seq:
                self._grew_at.pop(tenant, None)
        if checkpoint_rows and self._on_checkpoint is not None:
            self._on_checkpoint()
        return seqs

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
