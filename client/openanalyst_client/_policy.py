"""What the sync and async clients share and must agree on: when to retry, how to read an error answer, and
how a resumable event stream decides what to yield, when to stop and where to resume.

The retry rule, for one request (at most ``max_retries`` retries):

* **429**, any method: the server refused before doing anything (``TOO_MANY_CALLS`` is decided before a call
  runs), so a POST is safe to repeat. Wait ``Retry-After`` seconds.
* **503 with ``Retry-After``**, any method: the server names a time to come back (host at its container cap),
  which it only does for work it did not start.
* **502, 503 without ``Retry-After``, 504**, and a connection cut after the request was sent: GET, HEAD, PUT,
  DELETE, OPTIONS only; a POST may have run (a tool call, a model turn) and is not repeated.
* A connection that could not be opened at all (refused, connect timeout): any method, nothing was sent.
* A ``Retry-After`` longer than ``max_retry_wait`` is not waited for: the typed error is raised at once.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from openanalyst_client.config import ClientConfig
from openanalyst_client.errors import APIError, api_error
from openanalyst_client.events import AnyEvent, ErrorEvent, SnapshotEvent, StateEvent

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff(attempt: int) -> float:
    return float(min(8.0, 0.5 * 2**attempt))


def reconnect_delay(failures: int) -> float:
    """Seconds before reconnecting a cut event stream after ``failures`` cuts in a row: the first at once."""
    return 0.0 if failures == 1 else min(5.0, 0.25 * 2 ** (failures - 2))


def status_delay(method: str, status: int, retry_after: float | None, attempt: int,
                 config: ClientConfig) -> float | None:
    """Seconds to wait before retrying an answer with this status, or None: do not retry."""
    if attempt >= config.max_retries:
        return None
    refused = status == 429 or (status == 503 and retry_after is not None)  # not done: safe for any method
    if not refused and not (status in (502, 503, 504) and method in IDEMPOTENT):
        return None
    wait = retry_after if retry_after is not None else backoff(attempt)
    return wait if wait <= config.max_retry_wait else None


def transport_delay(method: str, exc: httpx.TransportError, attempt: int, config: ClientConfig) -> float | None:
    """Seconds to wait before retrying after a transport failure, or None."""
    if attempt >= config.max_retries:
        return None
    nothing_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    return backoff(attempt) if nothing_sent or method in IDEMPOTENT else None


def error_from(response: httpx.Response, body: bytes) -> APIError:
    """The typed exception for an error answer (its body already read)."""
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = body.decode("utf-8", "replace")
    return api_error(response.status_code, parsed, retry_after_seconds(response.headers.get("retry-after")))


@dataclass
class ResumeState:
    """Bookkeeping of one resumable session stream.

    ``last_seq`` is the id of the last event yielded, sent as ``Last-Event-ID`` on reconnect, so the server
    replays exactly what was missed (no gap) and nothing already seen (no duplicate; events at or below it
    are dropped anyway, in case a proxy replays). ``turn_from`` is set for a message's stream: it ends at the
    first top-level ``state: idle`` after that seq. Snapshots after a reconnect are not yielded again.
    ``origin`` is where the stream began (``after``, or the first snapshot's ``last_seq`` for a live one), the
    resume point while no event has been seen yet.
    """

    turn: bool = False
    origin: int | None = None
    last_seq: int | None = None
    turn_from: int | None = None
    snapshots: int = 0
    events: int = 0
    done: bool = False
    resume_at: int | None = None

    def accept(self, event: AnyEvent) -> bool:
        """Whether to yield ``event``; sets ``done`` when the stream has reached its end."""
        if isinstance(event, SnapshotEvent):
            self.snapshots += 1
            if self.origin is None and not self.turn:
                self.origin = event.last_seq  # a live stream: what happens after this is what was asked for
            return self.snapshots == 1 and not self.turn  # a turn's stream has none of its own
        if isinstance(event, ErrorEvent) and event.code == "SUBSCRIBER_TOO_SLOW" and event.last_event_id is not None:
            self.resume_at = event.last_event_id  # the server dropped us: resume from where it says
            return False
        if event.seq is not None:
            if self.last_seq is not None and event.seq <= self.last_seq:
                return False
            self.last_seq = event.seq
            if self.turn and self.turn_from is None:
                self.turn_from = event.seq  # the user's message: the turn's first event
        self.events += 1
        if (self.turn_from is not None and isinstance(event, StateEvent) and event.state == "idle"
                and event.parent_tool_call_id is None and (event.seq or 0) > self.turn_from):
            self.done = True
        return True

    def resume_point(self) -> int | None:
        """The seq to resume after: where the server said, the last event seen, or where the stream began."""
        if self.resume_at is not None:
            return self.resume_at
        return self.last_seq if self.last_seq is not None else self.origin


def refused_at_start(event: AnyEvent, count: int) -> bool:
    """A stream whose first event is a 429 error: the server refused the work before starting it."""
    return count == 0 and isinstance(event, ErrorEvent) and event.status == 429
