"""The seam between the message endpoint and whatever answers a user turn (the agent loop, later).

A ``TurnRunner`` is started in a background task after the user's message is stored and its ``message``
event appended. It appends the turn's events (``assistant_delta``, ``tool_call`` …) to the session's event
log and must end with a ``state`` ``{"state": "idle"}`` event; if it raises or forgets, the
``TurnManager`` appends an ``error`` and the idle state itself.
"""

from __future__ import annotations

from typing import Protocol

from server.tenancy import Tenant


class TurnRunner(Protocol):
    async def start_turn(self, tenant: Tenant, session_id: str, user_text: str) -> None: ...
