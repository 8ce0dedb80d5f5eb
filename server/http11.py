"""The HTTP/1.1 parser the server runs: uvicorn's h11 protocol, with a header budget and our error body.

Uvicorn's default parser (httptools) buffers a request head of any size: one 64 MiB header was accepted and
cost ~120 MB before any API-key check. h11 refuses a head once its receive buffer passes
``max_incomplete_event_size`` (uvicorn's ``h11_max_incomplete_event_size``), so memory per connection stays
at that budget plus one socket read. Uvicorn answers that refusal with a plain-text 400; this protocol answers
with h11's own status hint (431 for an oversized head) and the server's one error shape, then closes.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.errors import error_body

DEFAULT_HEADER_LIMIT = 16 * 1024  # h11's own default
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
    """Pass as uvicorn's ``http=`` with ``h11_max_incomplete_event_size`` set to the header budget."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_limit = self.config.h11_max_incomplete_event_size or DEFAULT_HEADER_LIMIT
        self.conn = _RememberingConnection(h11.SERVER, self.header_limit)

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
