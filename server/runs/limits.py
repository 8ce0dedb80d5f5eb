"""A run's turn limit, handed to the session's turn runner through a context variable: the run service starts
the turn with ``TurnManager.start`` (whose task copies the caller's context), so no signature between the
HTTP message route and the agent loop has to know about runs."""

from __future__ import annotations

import contextvars

_MAX_TURNS: contextvars.ContextVar[int | None] = contextvars.ContextVar("run_max_turns", default=None)


def set_max_turns(value: int | None) -> contextvars.Token[int | None]:
    return _MAX_TURNS.set(value)


def reset_max_turns(token: contextvars.Token[int | None]) -> None:
    _MAX_TURNS.reset(token)


def run_max_turns(default: int) -> int:
    """The running run's ``max_turns``, else ``default`` (the server's setting, which a run can lower, never
    raise: it is the owner's bound on model turns per message)."""
    value = _MAX_TURNS.get()
    return default if value is None else min(value, default)
