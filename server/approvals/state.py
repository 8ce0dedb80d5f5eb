"""A session's state as the API reports it: ``requires_action`` while a call of its turn waits for a person,
``running`` while a turn runs otherwise, else ``idle``. Computed from the live turn and gate, never stored, so
a restart cannot leave a session in ``requires_action``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from server.services import Services

SessionState = Literal["running", "requires_action", "idle"]


def session_state(services: Services, session_id: str) -> SessionState:
    if services.approvals.waiting(session_id):
        return "requires_action"
    return "running" if services.turns.busy(session_id) else "idle"
