"""The HTTP/1.1 parser the server runs: uvicorn's h11 protocol, with a header budget and our error body.

Uvicorn's default parser (httptools) buffers a request head of any size: one 64 MiB header was accepted and
cost ~120 MB before any API-key check. h11 refuses a head once its receive buffer passes
``max_incomplete_event_size`` (uvicorn's ``h11_max_incomplete_event_size``), so memory per connection stays
at that budget plus one socket read. Uvicorn answers that refusal with a plain-text 400; this protocol answers
with h11's own status hint (431 for an oversized head) and the server's one error shape, then closes.

It also bounds how long and how many connections a client can hold without sending a request (uvicorn's own
keep-alive timer starts only after a first response, so a connection that sends nothing, or half a head, was
kept for good and ~20 000 of them used up the process's file descriptors):

* idle: a connection that sends no byte within ``idle_timeout_s`` of opening is closed (between requests,
  uvicorn's ``timeout_keep_alive``, set to the same value, does the same);
* head: once a request's first byte has arrived, the whole request line and headers must arrive within
  ``head_timeout_s``, else a 408 ``REQUEST_TIMEOUT`` and close (a header trickled every few seconds does not
  extend it);
* cap: past ``max_connections`` open connections a new one gets a 503 ``TOO_MANY_CONNECTIONS`` and is
  closed at once, so the process keeps descriptors for its containers, database and upstream calls.

``configured`` makes the subclass carrying the server's settings (uvicorn builds protocols from a class).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from http import HTTPStatus
from typing import Any, ClassVar, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.errors import error_body

DEFAULT_HEADER_LIMIT = 16 * 1024  # h11's own default
DEFAULT_HEAD_TIMEOUT_S = 10.0
DEFAULT_IDLE_TIMEOUT_S = 5.0
REFUSAL_LINGER_S = 1.0
log = logging.getLogger(__name__)


def default_max_connections() -> int:
    """A cap below the soft file-descriptor limit: a fifth of it (at least 128) is left for everything else
    (containers' sockets, SQLite, audit files, upstream connections)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 65_536
    return max(16, soft - max(128, soft // 5))


def _raw_error(status: int, code: str, message: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 error response, for a connection with no request to answer (h11 cannot send one)."""
    body = json.dumps(error_body(code, message, status)).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n")
    return head.encode("ascii") + body


class _RateLimitedWarning:
    """One log line per ``every_s`` for a repeated event, with how many happened: visible, never a flood."""

    def __init__(self, template: str, every_s: float = 10.0) -> None:
        self.template, self.every_s = template, every_s
        self.count, self.last = 0, float("-inf")
        self._flush: asyncio.TimerHandle | None = None

    def note(self, *args: Any) -> None:
        """Count one event; log now if the last line is ``every_s`` old, else once that much has passed."""
        self.count += 1
        wait = self.last + self.every_s - time.monotonic()
        if wait <= 0:
            self._write(*args)
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(wait, self._write, *args)

    def _write(self, *args: Any) -> None:
        self._flush = None
        if self.count:
            log.warning(self.template, self.count, *args)
            self.count, self.last = 0, time.monotonic()


_refused = _RateLimitedWarning("refused %d connection(s) past the cap of %d open connections "
                               "(OPENANALYST_MAX_CONNECTIONS)")
_timed_out = _RateLimitedWarning("closed %d connection(s) whose request head was not complete within %.0f s "
                                 "(OPENANALYST_HTTP_HEAD_TIMEOUT_S)")
_CODES = {431: ("HEADERS_TOO_LARGE", "the request line and headers are larger than the limit of {limit} bytes"),
          400: ("BAD_REQUEST", "the request is not valid HTTP/1.1")}


class _RememberingConnection(h11.Connection):
    """An h11 connection that keeps the last protocol error it raised (uvicorn drops it)."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


class LimitedH11Protocol(H11Protocol):
    """Pass as uvicorn's ``http=`` (``configured(...)`` for other deadlines and cap) with
    ``h11_max_incomplete_event_size`` set to the header budget and ``timeout_keep_alive`` to the idle one."""

    head_timeout_s: ClassVar[float] = DEFAULT_HEAD_TIMEOUT_S
    idle_timeout_s: ClassVar[float] = DEFAULT_IDLE_TIMEOUT_S
    max_connections: ClassVar[int | None] = None  # None: no cap

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_limit = self.config.h11_max_incomplete_event_size or DEFAULT_HEADER_LIMIT
        self.conn = _RememberingConnection(h11.SERVER, self.header_limit)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_is_head = False
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cap = self.max_connections
        if cap is not None and len(self.connections) >= cap:
            self._refused = True
            self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
            self.transport.write(_raw_error(503, "TOO_MANY_CONNECTIONS",
                                            f"the server has {cap} open connections, its limit; retry shortly",
                                            "retry-after: 1\r\n"))  # as every 503 of the API carries
            # closing now, with the client's request unread, would reset the connection and lose the 503:
            # half-close, discard what comes, close when the client does or a second later at most
            self.transport.write_eof()
            self._deadline = self.loop.call_later(REFUSAL_LINGER_S, self.transport.close)
            _refused.note(cap)
            return
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm(self.idle_timeout_s, head=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if not self._refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        self._track_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track_head()  # a pipelined, still partial head is under the same deadline

    def _track_head(self) -> None:
        """Waiting for a head with some of it received: the head deadline runs (started once, not extended);
        a head complete (a request under way) or nothing received: no deadline of ours."""
        if self.transport.is_closing():
            self._disarm()
        elif self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            if not self._deadline_is_head:
                self._arm(self.head_timeout_s, head=True)
        else:
            self._disarm()  # between requests uvicorn's keep-alive timer takes over

    def _arm(self, delay: float, *, head: bool) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, self._expired)
        self._deadline_is_head = head

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._deadline_is_head = None, False

    def _expired(self) -> None:
        head = self._deadline_is_head
        self._deadline, self._deadline_is_head = None, False
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if head:
            self.transport.write(_raw_error(408, "REQUEST_TIMEOUT", f"the request line and headers did not "
                                            f"arrive within {self.head_timeout_s:g} s"))
            _timed_out.note(self.head_timeout_s)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        error = self.conn.last_error if isinstance(self.conn, _RememberingConnection) else None
        status = 431 if error is not None and error.error_status_hint == 431 else 400
        code, message = _CODES[status]
        body = json.dumps(error_body(code, message.format(limit=self.header_limit), status)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        try:
            for event in (h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event) or b"")
        except h11.LocalProtocolError:  # a response was already under way: closing is all that is left
            pass
        self.transport.close()


def configured(*, head_timeout_s: float, idle_timeout_s: float,
               max_connections: int | None) -> type[LimitedH11Protocol]:
    """``LimitedH11Protocol`` with these deadlines and connection cap (uvicorn instantiates the class)."""
    return type("ConfiguredH11Protocol", (LimitedH11Protocol,),
                {"head_timeout_s": head_timeout_s, "idle_timeout_s": idle_timeout_s,
                 "max_connections": max_connections})
