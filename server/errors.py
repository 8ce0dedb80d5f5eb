"""Domain errors and their one mapping to HTTP.

Domain code raises an ``ApiError`` (or a subclass); only the edge (``server.app``'s exception handlers) turns
it into a response, always shaped ``{"error": {"code", "message", "status"}}``.

    ApiError
    ├── BadRequest          400
    ├── Unauthorized        401
    ├── Forbidden           403
    ├── NotFound            404
    ├── Conflict            409
    ├── PayloadTooLarge     413
    ├── Unprocessable       422
    ├── TooManyRequests     429   (carries Retry-After)
    └── ServiceUnavailable  503
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error with a stable machine-readable code, a human message and an HTTP status."""

    status: int = 500

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class Unprocessable(ApiError):
    status = 422


class TooManyRequests(ApiError):
    status = 429

    def __init__(self, code: str, message: str, *, retry_after_s: float) -> None:
        super().__init__(code, message, headers={"Retry-After": str(max(1, round(retry_after_s)))})


class ServiceUnavailable(ApiError):
    status = 503


def error_body(code: str, message: str, status: int) -> dict[str, Any]:
    """The one error shape, for places that have no exception to raise (SSE error events, middleware)."""
    return {"error": {"code": code, "message": message, "status": status}}
