"""The per-session event log: persisted with a sequence number, fanned out live, replayable.

``append`` is synchronous and never blocks on I/O or on a reader: it assigns the next ``seq``, encodes the
SSE frame once, hands it to every live subscriber's bounded queue and queues the row for the store's
group-committing writer. Until that commit the event sits in ``_pending``, which replay reads as well, so a
subscriber that connects at any moment gets every event after its ``after_seq`` exactly once: first the
persisted/pending ones up to the seq current at ``subscribe``, then the live queue (strictly greater).

A subscriber whose queue is full is sent an ``error`` ``SUBSCRIBER_TOO_SLOW`` (after the events it already
holds, so its Last-Event-ID is exact) and dropped; the writer and the other subscribers are unaffected.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from server.contract.events import ErrorEvent, SessionEvent, encode, encode_frame, event_data, frame_of
from server.errors import NotFound
from server.store.sql import Conn
from server.store.store import Store
from server.streaming.buffer import dumps_json as _DUMPS

REPLAY_PAGE = 500


@dataclass(frozen=True)
class Event:
    """One session event; ``seq`` is None for out-of-band ones (overflow/deleted notices)."""

    seq: int | None
    type: str
    data: dict[str, Any]
    frame: bytes = field(repr=False)


class Subscription:
    """A live reader: replay first, then its own bounded queue. Iterate it, or call ``batch`` for bursts."""

    def __init__(self, log: EventLog, session_id: str, after_seq: int, live_from: int,
                 max_events: int) -> None:
        self._log = log
        self.session_id = session_id
        self._replay_next = after_seq + 1
        self._live_from = live_from
        self._queue: deque[Event] = deque()
        self._max = max_events
        self._wake = asyncio.Event()
        self.closed = False  # no more events will be queued (overflow, deletion, shutdown, aclose)

    def _offer(self, event: Event) -> None:
        if self.closed:
            return
        if len(self._queue) >= self._max:
            last = self._last_queued_seq()
            msg = f"subscriber too slow; reconnect with Last-Event-ID: {last}" if last is not None else \
                "subscriber too slow; reconnect with Last-Event-ID"
            self._end(_out_of_band(ErrorEvent(code="SUBSCRIBER_TOO_SLOW", message=msg, status=503,
                                              last_event_id=last)))
            return
        self._queue.append(event)
        self._wake.set()

    def _last_queued_seq(self) -> int | None:
        for event in reversed(self._queue):
            if event.seq is not None:
                return event.seq
        return self._live_from if self._replay_next > self._live_from else self._replay_next - 1

    def _end(self, final: Event | None) -> None:
        if final is not None:
            self._queue.append(final)
        self.closed = True
        self._log._unregister(self)
        self._wake.set()

    async def batch(self, wait_s: float | None = None) -> list[Event] | None:
        """Every event available now (waiting up to ``wait_s``): [] on timeout, None when finished."""
        if self._replay_next <= self._live_from:
            events = await self._log._replay(self.session_id, self._replay_next, self._live_from)
            self._replay_next = self._live_from + 1 if not events else (events[-1].seq or 0) + 1
            if events:
                return events
        if not self._queue:
            if self.closed:
                return None
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait_s)
            except TimeoutError:
                return []
            if not self._queue:
                return None if self.closed else []
        out = list(self._queue)
        self._queue.clear()
        return out

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        try:
            while (events := await self.batch()) is not None:
                for event in events:
                    yield event
        finally:
            self.close()

    def close(self) -> None:
        """Release the queue; idempotent (a disconnecting client calls it)."""
        if not self.closed:
            self._end(None)


class EventLog:
    """Sequence numbers, persistence and fan-out for every session's events."""

    def __init__(self, db: Store, *, queue_events: int = 10_000) -> None:
        self._db = db
        self._max = queue_events
        self._seq: dict[str, int] = {}
        self._subs: dict[str, set[Subscription]] = {}
        self._pending: dict[str, dict[int, Event]] = {}
        self._lock = threading.Lock()  # guards _pending against the writer thread's after-commit removal
        self._deleted: set[str] = set()  # tombstones: a late append to a deleted session must not revive it
        self.on_append: list[Callable[[str, str, Event], None]] = []  # (tenant, session, event) observers

    async def last_seq(self, session_id: str) -> int:
        """The session's newest seq (read from the store once, then counted here)."""
        seq = self._seq.get(session_id)
        if seq is None:
            row = await self._db.read("SELECT COALESCE(MAX(seq), 0) FROM events WHERE session_id = ?",
                                      (session_id,))
            seq = self._seq.setdefault(session_id, int(row[0][0]))  # an append during the read counted on
        return seq

    def created(self, session_id: str) -> None:
        """A session just created has no events: its seq is known without a read."""
        self._seq.setdefault(session_id, 0)

    def append(self, tenant_id: str, session_id: str, event: SessionEvent) -> int:
        """Persist (group-committed) and fan out one typed event; returns its seq. Never blocks.

        The session's seq must be known here (``await last_seq`` first: every path that starts a turn or
        writes an event does, as the store cannot be read without waiting). Call it on the event loop's
        thread (subscribers are woken with asyncio primitives); from a worker thread use
        ``loop.call_soon_threadsafe``.

        Raises ``NotFound`` for a session deleted while something was still appending to it."""
        return self.append_unchecked(tenant_id, session_id, event.type, event_data(event))

    def append_unchecked(self, tenant_id: str, session_id: str, type: str, data: dict[str, Any]) -> int:
        """``append`` of an event that is not one of the contract's models: for the test hook only
        (``POST /_test/sessions/{id}/events``, off unless ``enable_test_hooks``), never for the server's own."""
        if session_id in self._deleted:
            raise NotFound("SESSION_NOT_FOUND", "the session was deleted")
        last = self._seq.get(session_id)
        if last is None:
            raise RuntimeError(f"append before last_seq({session_id!r}) was awaited")
        seq = last + 1
        self._seq[session_id] = seq
        text = _DUMPS(data)  # once: the SSE frame and the stored row carry the same JSON
        event = Event(seq, type, data, frame_of(type, text, seq))
        with self._lock:
            self._pending.setdefault(session_id, {})[seq] = event
        row = (session_id, seq, type, text, time.time())

        def insert(conn: Conn) -> None:
            conn.execute("INSERT INTO events (session_id, seq, type, data, created_at)"
                         " VALUES (?,?,?,?,?)", row)

        def committed() -> None:
            with self._lock:
                pending = self._pending.get(session_id)
                if pending is not None:
                    pending.pop(seq, None)
                    if not pending:
                        del self._pending[session_id]

        self._db.write_nowait(insert, committed)
        for sub in list(self._subs.get(session_id, ())):
            sub._offer(event)
        for observer in self.on_append:
            observer(tenant_id, session_id, event)
        return seq

    async def subscribe(self, tenant_id: str, session_id: str, after_seq: int | None = None) -> Subscription:
        """A reader of every event with seq > ``after_seq`` (None: only new ones), no gap, no duplicate."""
        await self.last_seq(session_id)
        live_from = self._seq[session_id]  # read after the await: nothing can be appended between here and add
        start = live_from if after_seq is None else max(0, min(after_seq, live_from))
        sub = Subscription(self, session_id, start, live_from, self._max)
        self._subs.setdefault(session_id, set()).add(sub)
        return sub

    def subscriber_count(self, session_id: str | None = None) -> int:
        if session_id is not None:
            return len(self._subs.get(session_id, ()))
        return sum(len(s) for s in self._subs.values())

    def _unregister(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.session_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.session_id]

    async def _replay(self, session_id: str, first: int, last: int) -> list[Event]:
        """Events first..last (at most a page): pending ones are read before the table, see module doc."""
        with self._lock:
            pending = {s: e for s, e in self._pending.get(session_id, {}).items() if first <= s <= last}
        rows = await self._db.read("SELECT seq, type, data FROM events WHERE session_id = ? AND seq BETWEEN ? AND ?"
                                   " ORDER BY seq LIMIT ?", (session_id, first, last, REPLAY_PAGE))
        merged = dict(pending)
        for seq, type, data in rows:
            if seq not in merged:
                parsed = json.loads(data)
                merged[seq] = Event(seq, type, parsed, encode_frame(type, parsed, seq))
        ordered = [merged[s] for s in sorted(merged)]
        # Stop at the first gap: a seq missing from both sources lies past this page of the table.
        out: list[Event] = []
        for event in ordered:
            if event.seq != first + len(out) or len(out) >= REPLAY_PAGE:
                break
            out.append(event)
        return out

    def forget(self, tenant_id: str, session_id: str) -> None:
        """The session is being deleted: end its subscribers, drop its counters (rows go with the session)."""
        gone = ErrorEvent(code="SESSION_DELETED", message="the session was deleted", status=404)
        for sub in list(self._subs.get(session_id, ())):
            sub._end(_out_of_band(gone))
        self._seq.pop(session_id, None)
        self._deleted.add(session_id)

    def close_all(self) -> None:
        """Shutdown: end every subscriber so their responses finish."""
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub._end(None)

    async def flush(self) -> None:
        await self._db.flush()


def _out_of_band(event: ErrorEvent) -> Event:
    """A notice outside the sequence (no ``id:``): the reader's Last-Event-ID stays its last real event."""
    return Event(None, event.type, event_data(event), encode(event))


def delete_events(conn: Conn, session_id: str) -> None:
    conn.execute("DELETE FROM events WHERE session_id = ?", (session_id,))
