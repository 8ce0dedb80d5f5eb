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

``ErrorBody`` is that shape as a model: the OpenAPI document names it for every error status of every route
(``server.contract.openapi.errors``), the 422 of a request that fails validation included.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Stable machine-readable code, e.g. SESSION_NOT_FOUND.", examples=["NOT_FOUND"])
    message: str = Field(description="For humans; may change between releases.")
    status: int = Field(ge=100, le=599, description="The HTTP status, repeated.")


class ErrorBody(BaseModel):
    """Every error answer of the API (never FastAPI's default shape)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


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


# --- the edge: exception handlers installed by ``server.app.build_app`` ----------------------------------

_HTTP_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
               405: "METHOD_NOT_ALLOWED", 406: "NOT_ACCEPTABLE", 413: "PAYLOAD_TOO_LARGE",
               415: "UNSUPPORTED_MEDIA_TYPE", 422: "VALIDATION_ERROR", 429: "TOO_MANY_REQUESTS"}


def install_handlers(app: Any) -> None:
    """Map every exception a request can raise to the one error shape (never a traceback)."""
    import logging

    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    log = logging.getLogger("server.errors")

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body the JSON parser gave up on (nesting too deep, a 5000-digit number…)
            return JSONResponse(error_body("MALFORMED_JSON", "the request body could not be parsed as JSON", 400),
                                status_code=400)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path[:200]}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path[:200]}"
        else:
            message = str(exc.detail)
        return JSONResponse(error_body(code, message, exc.status_code), status_code=exc.status_code,
                            headers=exc.headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(error_body("MALFORMED_JSON", "the request body is not valid JSON", 400),
                                status_code=400)
        parts = []
        for e in errors[:10]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return JSONResponse(error_body("VALIDATION_ERROR", "; ".join(parts), 422), status_code=422)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("INTERNAL_ERROR", "internal server error; see the server log", 500),
                            status_code=500)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)
