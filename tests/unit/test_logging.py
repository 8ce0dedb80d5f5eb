"""Log formatting, redaction and the request id (server.observability)."""

from __future__ import annotations

import json
import logging
import sys

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from server.observability.logging import REDACTED, JsonFormatter, Redactor, TextFormatter, log_config
from server.observability.request_id import RequestIdMiddleware, current_request_id


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom with sk-ant-api03-LEAKEDKEY12345")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("server.test", logging.WARNING, __file__, 1, message, args, info)


def test_redactor_masks_known_values_and_secret_shapes() -> None:
    """Configured secrets and anything shaped like a bearer token or a provider/our key become [REDACTED]."""
    redact = Redactor(["plain-configured-secret-value"])
    line = redact("key=plain-configured-secret-value auth='Bearer abc.def-123' oak_a1b2c3_xyzXYZ0123 "
                  "sk-proj-ABCDEFGH12345 sk-ant-api03-QWERTY123456 AIzaSyA1234567890123456789012 "
                  "AKIAABCDEFGHIJKLMNOP url?key=gemkey123&x=1")
    for secret in ("plain-configured-secret-value", "abc.def-123", "oak_a1b2c3", "sk-proj-ABCDEFGH12345",
                   "sk-ant-api03", "AIzaSyA", "AKIAABCDEFGHIJKLMNOP", "gemkey123"):
        assert secret not in line, secret
    assert line.count(REDACTED) == 8
    harmless = "nothing secret: tool bash took 12 ms, sk- alone"
    assert redact(harmless) == harmless


def test_json_formatter_one_object_per_line_with_request_id() -> None:
    """A JSON line holds time, level, logger, message and the current request id; a traceback is one field
    (the line stays one line) and is redacted too."""
    formatter = JsonFormatter(Redactor())
    token = current_request_id.set("req-unit-1")
    try:
        line = formatter.format(record("call %s failed", "c1", exc=True))
    finally:
        current_request_id.reset(token)
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["level"] == "WARNING" and obj["logger"] == "server.test" and obj["message"] == "call c1 failed"
    assert obj["request_id"] == "req-unit-1" and obj["ts"].endswith("+00:00")
    assert "ValueError" in obj["exc"] and "LEAKEDKEY" not in obj["exc"]


def test_text_formatter_has_time_level_logger_and_request_id() -> None:
    """Outside a request the id is '-'; the line starts with an ISO UTC timestamp."""
    line = TextFormatter(Redactor()).format(record("hello %d", 5))
    stamp, level, name, request_id, message = line.split(" ", 4)
    assert stamp.endswith("+00:00") and "T" in stamp
    assert (level, name, request_id, message) == ("WARNING", "server.test", "[-]", "hello 5")


def test_log_config_routes_uvicorn_through_our_handler() -> None:
    """uvicorn's loggers propagate to the one root handler; the start line's logger is INFO at any level."""
    config = log_config("warning", "json", ["s3cr3t-value"])
    assert config["root"]["level"] == "WARNING" and config["root"]["handlers"] == ["main"]
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert config["loggers"][name] == {"handlers": [], "level": "WARNING", "propagate": True}
    assert config["loggers"]["server.startup"]["level"] == "INFO"
    assert config["formatters"]["main"]["()"] is JsonFormatter


async def _echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    body = (current_request_id.get() or "").encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", b"app-set")]})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.anyio
@pytest.mark.parametrize(("sent", "kept"), [("trace-123_abc.DEF:9", True), ("has space", False),
                                             ("x" * 129, False), ("line\u00e9", False)])
async def test_request_id_accepted_or_replaced_and_echoed(sent: str, kept: bool) -> None:
    """A plain token up to 128 characters is kept; anything else (spaces, too long, non-ASCII) is replaced by
    a fresh id, so a caller cannot write into the log; the response carries exactly one X-Request-ID."""
    transport = httpx.ASGITransport(app=RequestIdMiddleware(_echo_app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/", headers={"X-Request-ID": sent.encode("utf-8")})
    assert response.headers.get_list("x-request-id") == [response.text]
    assert (response.text == sent) is kept
    if not kept:
        assert response.text.startswith("req_") and len(response.text) == 20
    assert current_request_id.get() is None
