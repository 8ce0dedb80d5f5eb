"""Which tool call a connection belongs to, and the short ``network`` summary each call's result carries.

The dispatcher brackets every tool call with ``begin``/``end``. ``begin`` tells ``SessionKeys`` that the call was
begun in its sandbox session (so the proxy accepts the call's own credential, during the call and after it:
a process the call left that connects later is still the call's, in its record) and opens a tally; the
proxy's ``attribute`` hook, wrapped by ``attribute``, counts each attempt attributed to a call the moment it
is attributed (an attributed attempt always ends in exactly one record); ``recorded`` folds each finished
record into its call's tally. ``end`` waits a bounded moment for the call's attempts whose records have not
arrived (the proxy sees the client's close a moment after the tool does), returns the summary and drops the
tally; what is still open then is counted as ``open`` (its record comes later, in the audit log), and what
the call's processes do afterwards is in the audit log only.

Memory is bounded per call (counts and at most ``MAX_HOSTS`` names of each kind) and a tally lives only while
its call runs. Thread-safe: ``begin``/``end`` run on the server's loop, ``attribute``/``recorded`` on the
proxy's.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

from toolrunner.egress.credentials import SessionKeys
from toolrunner.egress.proxy import Attribute, Attribution, Identity
from toolrunner.egress.records import ConnectionRecord
from toolrunner.results import NetworkSummary

MAX_HOSTS = 8
SETTLE_S = 0.5  # at most this long for a call's attempts still in the proxy after the call returned


@dataclass
class _Tally:
    attempts: int = 0
    allowed: int = 0
    denied: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    hosts: list[str] = field(default_factory=list)
    denied_hosts: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    more: int = 0
    settled: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def pending(self) -> int:
        return self.attempts - self.allowed - self.denied

    def add(self, rec: ConnectionRecord) -> None:
        name = f"{rec.host}:{rec.port}"
        allowed = rec.decision == "allow"
        self.allowed += allowed
        self.denied += not allowed
        self.bytes_up += rec.bytes_up
        self.bytes_down += rec.bytes_down
        names = self.hosts if allowed else self.denied_hosts
        key = ("+" if allowed else "-") + name
        if key in self.seen:
            return
        if len(names) < MAX_HOSTS:  # bounded: at most 2 * MAX_HOSTS names kept, the rest only counted
            self.seen.add(key)
            names.append(name)
        else:
            self.more += 1

    def summary(self) -> NetworkSummary:
        return NetworkSummary(allowed=self.allowed, denied=self.denied, open=max(self.pending, 0),
                              bytes_up=self.bytes_up, bytes_down=self.bytes_down, hosts=list(self.hosts),
                              denied_hosts=list(self.denied_hosts), more_hosts=self.more)


class CallLedger:
    """Calls in flight, keyed by (tenant, call id): their attribution and their network tally."""

    def __init__(self, keys: SessionKeys, *, settle_s: float = SETTLE_S) -> None:
        self._keys = keys
        self._settle_s = settle_s
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._lock = threading.Lock()

    def begin(self, tenant: str, call_id: str, sandbox_session: str | None) -> None:
        """A call starts; ``sandbox_session`` is the runner session it runs in (None: a server-side tool, whose
        own connections carry a per-call token instead)."""
        with self._lock:
            self._tallies[(tenant, call_id)] = _Tally()
        if sandbox_session is not None:
            self._keys.begin_call(tenant, sandbox_session, call_id)

    async def end(self, tenant: str, call_id: str, sandbox_session: str | None) -> NetworkSummary | None:
        """The call returned: its summary (None when it made no attempt), once its attempts' records are in or
        ``settle_s`` passed."""
        if sandbox_session is not None:
            self._keys.end_call(tenant, sandbox_session, call_id)  # no longer running; its credential still works
        with self._lock:
            tally = self._tallies.get((tenant, call_id))
            if tally is not None and tally.pending > 0:
                tally.settled, tally.loop = asyncio.Event(), asyncio.get_running_loop()
        try:
            if tally is not None and tally.settled is not None:
                # a connection that outlives its call is counted as open; its record comes when it ends
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tally.settled.wait(), self._settle_s)
        finally:
            with self._lock:
                self._tallies.pop((tenant, call_id), None)
                summary = tally.summary() if tally is not None and tally.attempts else None
        return summary

    def attribute(self, inner: Attribute) -> Attribute:
        """``inner`` (the credential registries), counting each attempt attributed to a call in flight."""
        def attribute(identity: Identity, credential: str | None) -> Attribution | None:
            found = inner(identity, credential)
            if found is not None and found.call_id is not None:
                with self._lock:
                    tally = self._tallies.get((identity.tenant, found.call_id))
                    if tally is not None:
                        tally.attempts += 1
            return found
        return attribute

    def recorded(self, rec: ConnectionRecord) -> None:
        """Fold a finished attempt into its call's tally (the proxy's loop; never blocks)."""
        if rec.call_id is None:
            return
        with self._lock:
            tally = self._tallies.get((rec.tenant, rec.call_id))
            if tally is None:
                return
            if tally.pending <= 0:  # not counted at attribution (refused before it): count it now
                tally.attempts += 1
            tally.add(rec)
            wake = tally.settled is not None and tally.pending == 0
        if wake and tally.loop is not None and tally.settled is not None:
            tally.loop.call_soon_threadsafe(tally.settled.set)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tallies)
