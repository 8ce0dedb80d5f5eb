"""Running turns: one at a time per session, in background tasks that outlive the HTTP request.

The message endpoint asks ``TurnManager.start``; a second message while a turn runs is a 409
``SESSION_BUSY``. A session stops being busy the moment its ``state: idle`` event is appended (so a client
that saw idle may send the next message at once) or, failing that, when the task ends.
"""

from __future__ import annotations

import asyncio
import logging

from server.contract.events import ErrorEvent, StateEvent
from server.errors import Conflict
from server.sessions.events import Event, EventLog
from server.sessions.turn_protocol import TurnRunner
from server.tenancy import Tenant

log = logging.getLogger(__name__)

NO_PROVIDER_MESSAGE = (
    "no AI provider is configured: set a key such as ANTHROPIC_API_KEY or OPENAI_API_KEY before starting "
    "the server, or add one at runtime with PUT /me/providers/{name} {\"api_key\": \"...\"}")


class NoProviderTurnRunner:
    """What a turn answers before the agent loop is wired in: the finished product's no-provider answer."""

    def __init__(self, events: EventLog) -> None:
        self._events = events

    async def start_turn(self, tenant: Tenant, session_id: str, user_text: str) -> None:
        error = ErrorEvent(code="NO_PROVIDER_CONFIGURED", message=NO_PROVIDER_MESSAGE, status=503)
        self._events.append(tenant.id, session_id, error)
        self._events.append(tenant.id, session_id, StateEvent(state="idle"))


class TurnManager:
    """Tracks the running turn of each session and guarantees each ends with ``state: idle``."""

    def __init__(self, events: EventLog, runner: TurnRunner) -> None:
        self.events = events
        self.runner = runner
        self._running: dict[str, asyncio.Task[None] | None] = {}  # None: reserved, not started yet
        self._quiet: set[asyncio.Task[None]] = set()  # tasks whose idle was seen (or that must stay silent)
        events.on_append.append(self._observe)

    def busy(self, session_id: str) -> bool:
        return session_id in self._running

    def task(self, session_id: str) -> asyncio.Task[None] | None:
        """The session's running turn (None when none runs, or it is reserved and not started yet)."""
        return self._running.get(session_id)

    def reserve(self, session_id: str) -> None:
        """Claim the session for a turn (synchronously, so two racing requests cannot both pass)."""
        if session_id in self._running:
            raise Conflict("SESSION_BUSY", "a turn is already running in this session; wait for state idle")
        self._running[session_id] = None

    def release(self, session_id: str) -> None:
        """Undo a ``reserve`` whose turn never started."""
        if self._running.get(session_id, 0) is None:
            del self._running[session_id]

    def start(self, tenant: Tenant, session_id: str, user_text: str) -> None:
        """Run the turn in the background (after ``reserve``)."""
        self._running[session_id] = asyncio.create_task(self._run(tenant, session_id, user_text),
                                                        name=f"turn-{session_id}")

    async def _run(self, tenant: Tenant, session_id: str, user_text: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            await self.runner.start_turn(tenant, session_id, user_text)
        except asyncio.CancelledError:
            self._finish(task, tenant, session_id, "TURN_CANCELLED", "the turn was cancelled")
            raise
        except Exception:
            log.exception("turn failed in session %s", session_id)
            self._finish(task, tenant, session_id, "INTERNAL_ERROR", "the turn failed; see the server log")
        else:
            self._finish(task, tenant, session_id, "INTERNAL_ERROR", "the turn ended without reporting idle")
        finally:
            self._quiet.discard(task)
            if self._running.get(session_id) is task:
                del self._running[session_id]

    def _finish(self, task: asyncio.Task[None], tenant: Tenant, session_id: str, code: str,
                message: str) -> None:
        if task in self._quiet:
            return
        try:
            self.events.append(tenant.id, session_id, ErrorEvent(code=code, message=message, status=500))
            self.events.append(tenant.id, session_id, StateEvent(state="idle"))
        except Exception:  # the store is closing: nobody is left to tell
            log.debug("could not record the end of the turn in %s", session_id)

    def _observe(self, tenant_id: str, session_id: str, event: Event) -> None:
        if event.type == "state" and event.data.get("state") == "idle":
            task = self._running.get(session_id)
            if task is not None:
                self._quiet.add(task)
                del self._running[session_id]

    async def cancel(self, session_id: str, *, silent: bool = False) -> bool:
        """Stop the session's turn and wait for it to unwind; False if none was running.

        The runner may close the turn itself on ``CancelledError`` (e.g. an ``INTERRUPTED`` error and idle);
        if it does not, a ``TURN_CANCELLED`` error and idle are appended — unless ``silent`` (deletion)."""
        task = self._running.get(session_id)
        if task is None or task.done():
            return False
        if silent:
            self._quiet.add(task)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return True

    async def shutdown(self) -> None:
        tasks = [t for t in self._running.values() if t is not None and not t.done()]
        self._running.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
