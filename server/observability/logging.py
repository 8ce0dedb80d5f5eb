"""Logging configured once at start: level, timestamps, text or JSON lines, the request id, no secrets.

``log_config(settings)`` is a ``logging.config.dictConfig`` dict, handed to uvicorn as its ``log_config`` so
that uvicorn's own loggers (``uvicorn.error``, ``uvicorn.access``) and ours share one handler and format.
``OPENANALYST_LOG_FORMAT=json`` writes one JSON object per line (``ts``, ``level``, ``logger``, ``message``,
``request_id``, ``exc``). Every formatted line goes through ``Redactor``: the server's own provider keys and
anything shaped like a bearer token, an API key of ours or a provider key is replaced by ``[REDACTED]`` —
a second line of defence behind code that never logs them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, SecretStr

from server.observability.request_id import current_request_id

REDACTED = "[REDACTED]"
_SHAPES = re.compile(
    r"(?i)(?<=bearer )[^\s\"',;]+"            # Authorization: Bearer <anything>
    r"|\boak_[A-Za-z0-9_-]{6,}"                # our API keys
    r"|\b(?:sk|xai|pk|rk)-[A-Za-z0-9_-]{8,}"   # OpenAI, Anthropic (sk-ant-…), xAI, OpenRouter (sk-or-…)
    r"|\bAIza[A-Za-z0-9_-]{20,}"               # Google API keys
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"          # AWS access key ids
    r"|(?<=[?&]key=)[^&\s]+")                  # Gemini's ?key=
# Every branch of _SHAPES needs one of these (case-insensitively): a line with none of them, ASCII only, cannot
# match, and skips the regex (~50 us a line; the access log writes one line per request). Non-ASCII text always
# runs it, since re's IGNORECASE folds a few non-ASCII letters onto ASCII ones (the long s, the Kelvin sign).
_TRIGGERS = ("bearer ", "oak_", "sk-", "xai-", "pk-", "rk-", "aiza", "akia", "asia", "key=")


def _may_hold_shape(text: str) -> bool:
    if not text.isascii():
        return True
    folded = text.lower()
    return any(trigger in folded for trigger in _TRIGGERS)


class Redactor:
    """Replaces known secret values and secret-shaped tokens in a line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._known = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._known:
            if value in text:
                text = text.replace(value, REDACTED)
        return _SHAPES.sub(REDACTED, text) if _may_hold_shape(text) else text


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on the record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get() or "-"
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        self._redact = redactor or Redactor()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get() or "-"
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback is a field, never extra lines."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name,
            "message": self._redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or current_request_id.get(),
        }
        if record.exc_info:
            out["exc"] = self._redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def secret_values(settings: BaseModel) -> list[str]:
    """Every ``SecretStr`` setting's value (the provider keys from the environment)."""
    values = (getattr(settings, name) for name in type(settings).model_fields)
    return [v.get_secret_value() for v in values if isinstance(v, SecretStr) and v.get_secret_value()]


def log_config(level: str, fmt: str, secrets: Iterable[str] = ()) -> dict[str, Any]:
    """The dictConfig for the server process: one stderr handler, our loggers and uvicorn's through it."""
    redactor = Redactor(secrets)
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"main": {"()": formatter, "redactor": redactor}},
        "handlers": {"main": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                              "formatter": "main", "filters": ["request_id"]}},
        "root": {"handlers": ["main"], "level": upper},
        "loggers": {
            "uvicorn": {"handlers": [], "level": upper, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": upper, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": upper, "propagate": True},
            # The start line says where the server listens: shown whatever the level.
            "server.startup": {"handlers": [], "level": "INFO", "propagate": True},
        },
    }
