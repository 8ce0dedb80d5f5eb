"""Every failure the client raises, with the server's stable ``code`` kept, so callers branch on codes.

    OpenAnalystError
    ├── APIError                  the server answered {"error": {"code", "message", "status"}}
    │   ├── BadRequestError        400
    │   ├── AuthenticationError    401
    │   ├── PermissionDeniedError  403
    │   ├── NotFoundError          404 (also LookupError)
    │   ├── ConflictError          409
    │   ├── UnprocessableError     422 (also ValueError)
    │   ├── RateLimitError         429 (``retry_after``: seconds the server asked for)
    │   └── ServerError            5xx (``retry_after`` on a 503 that carries one)
    ├── TransportError            no answer: refused, reset, timed out (also ConnectionError)
    │   └── StreamInterrupted      a stream that cannot be resumed was cut; ``events`` says how far it got
    └── AuditVerificationError    an export could not be read as one (the check itself returns a result)
"""

from __future__ import annotations

from typing import Any


class OpenAnalystError(Exception):
    """Base of everything this package raises."""


class APIError(OpenAnalystError):
    """An error answer; ``code`` is stable across releases, ``message`` is for humans."""

    def __init__(self, code: str, message: str, status: int, *, retry_after: float | None = None,
                 body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body


class BadRequestError(APIError):
    pass


class AuthenticationError(APIError):
    pass


class PermissionDeniedError(APIError):
    pass


class NotFoundError(APIError, LookupError):
    pass


class ConflictError(APIError):
    pass


class UnprocessableError(APIError, ValueError):
    pass


class RateLimitError(APIError):
    pass


class ServerError(APIError):
    pass


class TransportError(OpenAnalystError, ConnectionError):
    """The request got no complete answer (the cause is chained)."""


class StreamInterrupted(TransportError):
    """A stream the server gives no event ids for (``/v1/chat``, tool streams) was cut mid-way."""

    def __init__(self, message: str, events: int) -> None:
        super().__init__(message)
        self.events = events


class AuditVerificationError(OpenAnalystError, ValueError):
    """The file is not an audit export (not JSON Lines, no head line)."""


_BY_STATUS: dict[int, type[APIError]] = {400: BadRequestError, 401: AuthenticationError,
                                         403: PermissionDeniedError, 404: NotFoundError, 409: ConflictError,
                                         422: UnprocessableError, 429: RateLimitError}


def api_error(status: int, body: Any, retry_after: float | None) -> APIError:
    """The typed exception for an error answer; a body not in the server's shape still gives one."""
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict) and isinstance(detail.get("code"), str):
        code, message = detail["code"], str(detail.get("message", ""))
    else:
        code, message = f"HTTP_{status}", (str(body)[:500] if body is not None else "")
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    return cls(code, message, status, retry_after=retry_after, body=body)
