"""Request details both clients build the same way: paths (ids quoted), bodies without ``None``s, headers."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

SSE = {"Accept": "text/event-stream"}


def drop_none(**fields: Any) -> dict[str, Any]:
    """Leave out what the caller did not give, so the server applies its own defaults."""
    return {k: v for k, v in fields.items() if v is not None}


def session_path(session_id: str, *rest: str) -> str:
    return "/".join(("/sessions", quote(session_id, safe=""), *rest))


def tool_path(name: str) -> str:
    return "/v1/tools/" + quote(name, safe="")


def resume(after: int | None) -> dict[str, str]:
    """Headers that open a session stream after ``after`` (none: from now)."""
    return SSE | ({"Last-Event-ID": str(after)} if after is not None else {})
