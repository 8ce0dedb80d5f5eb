"""Runs for CI: an agent turn started without holding a stream, observed to its end, stored, reported.

``RunService.create`` stores the run (``queued``) and starts its task; the task waits for the session to be
free, starts the turn through the ``TurnManager`` (as the message route does, with the run's turn limit in a
context variable), follows the session's events (``Tracker``), enforces time and cost by interrupting the
turn, stores the outcome and hands it to the webhook sender. docs/runs.md.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from server.contract.events import MessageEvent
from server.errors import Conflict, TooManyRequests
from server.providers.types import TextBlock
from server.runs.limits import reset_max_turns, set_max_turns
from server.runs.store import FINAL, RunRow, RunStore
from server.runs.tracker import Tracker
from server.runs.views import public_run
from server.runs.webhooks import WebhookSender
from server.sessions.events import Event, EventLog
from server.sessions.runner import TurnManager
from server.sessions.store import SessionStore, now_iso
from server.store.secretbox import SecretBox
from server.tenancy import Tenant

if TYPE_CHECKING:
    from server.environments.service import EnvironmentService

log = logging.getLogger(__name__)
RESTARTED = "the server stopped while the run was queued or running"
RESUME_DELIVERIES_WITHIN = timedelta(days=1)  # older undelivered outcomes are not sent after a restart


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str


class RunService:
    def __init__(self, store: RunStore, sessions: SessionStore, events: EventLog, turns: TurnManager,
                 box: SecretBox, sender: WebhookSender,
                 prestart: Callable[[str], Awaitable[None]] | None = None,
                 environments: EnvironmentService | None = None,
                 max_active_per_tenant: int = 100) -> None:
        self.store = store
        self._sessions = sessions
        self._events = events
        self._turns = turns
        self._box = box
        self._sender = sender
        self._prestart = prestart  # the sandbox backend's prestart(tenant), when there is one
        self._environments = environments  # server.environments' service, when the server has it
        self._tasks: dict[str, asyncio.Task[None]] = {}  # run id → its task
        self._cancelled: set[str] = set()
        self._trackers: dict[str, Tracker] = {}  # session id → the tracker of the run running in it
        self._idle: dict[str, asyncio.Event] = {}  # session id → set when a turn there ends
        self._background: set[asyncio.Task[Any]] = set()
        self._max_active = max_active_per_tenant
        self._active: dict[str, int] = {}  # tenant → its queued and running runs (each holds a task)
        events.on_append.append(self._observe)

    async def create(self, tenant: Tenant, message: str, session_id: str | None, environment: str | None,
                     limits: dict[str, Any], webhook: Webhook | None) -> RunRow:
        """Store a queued run and start its task; 429 ``RUN_LIMIT_REACHED`` while the tenant already has
        ``max_active_per_tenant`` runs queued or running (each is a task and, without a session, a new session:
        a tenant must not queue without bound)."""
        active = self._active.get(tenant.id, 0)
        if active >= self._max_active:
            raise TooManyRequests("RUN_LIMIT_REACHED", f"{active} runs of this tenant are queued or running "
                                  f"(the limit is {self._max_active}); retry when one has ended",
                                  retry_after_s=5)
        if environment is not None and self._environments is not None:
            await self._environments.check_exists(tenant.id, environment)  # 404 ENVIRONMENT_NOT_FOUND
        if session_id is not None:
            session = await self._sessions.get(tenant.id, session_id)  # 404 for a missing (or another tenant's) one
            if environment is not None and getattr(session, "environment", environment) != environment:
                raise Conflict("RUN_ENVIRONMENT_MISMATCH", f"session {session_id!r} runs in environment "
                               f"{getattr(session, 'environment', None)!r}, not {environment!r}; leave "
                               "environment out or start the run without a session")
        run = RunRow(id="run_" + secrets.token_urlsafe(12), tenant_id=tenant.id, message=message, limits=limits,
                     session_id=session_id, environment=environment, created_at=now_iso(),
                     webhook_url=webhook.url if webhook else None,
                     webhook_secret=self._box.seal(webhook.secret.encode()) if webhook else None)
        self._active[tenant.id] = self._active.get(tenant.id, 0) + 1  # taken before the await: no race past it
        try:
            await self.store.save(run)
        except BaseException:
            self._release(tenant.id)
            raise
        self._spawn(run.id, self._execute(tenant, run), tenant.id)
        return run

    def _release(self, tenant_id: str) -> None:
        left = self._active.get(tenant_id, 0) - 1
        if left > 0:
            self._active[tenant_id] = left
        else:
            self._active.pop(tenant_id, None)

    async def cancel(self, tenant_id: str, run_id: str) -> RunRow:
        """Stop a queued or running run; returns its final row. Idempotent: a run that has already ended is
        returned as it ended (a CI step that cancels on its own failure need not know whether it won the race)."""
        run = await self.store.get(tenant_id, run_id)
        task = self._tasks.get(run_id)
        if run.status in FINAL or task is None:
            return run
        self._cancelled.add(run_id)
        if run.session_id is not None and run.status == "running":
            await self._turns.cancel(run.session_id)  # the turn closes itself; the task sees its idle
        else:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return await self.store.get(tenant_id, run_id)

    async def recover(self) -> int:
        """Start-up: deliveries an earlier process left unfinished go on (same event id, the attempts left);
        runs it left unfinished become failed, and their webhooks are sent. Returns how many runs failed."""
        since = (datetime.now(UTC) - RESUME_DELIVERIES_WITHIN).isoformat(timespec="milliseconds")
        undelivered = await self.store.undelivered(self._sender.max_attempts, since.replace("+00:00", "Z"))
        for run, attempts, event_id in undelivered:
            self._report(run, event_id, attempts + 1)
        rows = await self.store.fail_unfinished(now_iso(), RESTARTED)
        for run in rows:
            self._report(run)
        return len(rows)

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one run ---------------------------------------------------------------------------------------------

    def _spawn(self, run_id: str, coro: Any, tenant_id: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=f"run-{run_id}")
        self._tasks[run_id] = task

        def done(_task: asyncio.Task[None]) -> None:
            self._tasks.pop(run_id, None)
            self._release(tenant_id)
        task.add_done_callback(done)

    async def _execute(self, tenant: Tenant, run: RunRow) -> None:
        started = time.monotonic()
        try:
            if run.session_id is None:
                placed: dict[str, Any] = {} if run.environment is None or self._environments is None \
                    else {"environment": run.environment}  # the session's tool calls run in it
                session = await self._sessions.create(tenant.id, title=f"run {run.id}", **placed)
                run.session_id = session.id
                self._events.created(session.id)
                if self._prestart is not None:
                    await self._prestart(tenant.id)
            await self._reserve(run.session_id)
            run.status, run.started_at = "running", now_iso()
            await self.store.save(run)
            await self._follow(tenant, run, started)
        except asyncio.CancelledError:
            if run.id in self._cancelled:
                self._end(run, "cancelled", None)
                await asyncio.shield(self._finish(run))
            raise  # shutdown: the row stays as it is; the next start marks it failed
        except Exception as exc:
            log.exception("run %s failed", run.id)
            self._end(run, "failed", ("RUN_FAILED", getattr(exc, "message", None) or str(exc)))
        await self._finish(run)

    async def _reserve(self, session_id: str) -> None:
        """Claim the session for the run's turn, waiting (queued) while another turn runs there."""
        while True:
            try:
                self._turns.reserve(session_id)
                return
            except Conflict:
                idle = self._idle.setdefault(session_id, asyncio.Event())
                idle.clear()
                if self._turns.busy(session_id):
                    await idle.wait()

    async def _follow(self, tenant: Tenant, run: RunRow, started: float) -> None:
        assert run.session_id is not None
        session_id = run.session_id
        tracker = Tracker(run.limits.get("max_cost_usd"), lambda: self._interrupt(session_id))
        self._trackers[session_id] = tracker
        try:
            block = TextBlock(text=run.message)
            message_id = await self._sessions.append_message(tenant.id, session_id, "user", [block.model_dump()])
            await self._events.last_seq(session_id)
            self._events.append(tenant.id, session_id, MessageEvent(id=message_id, role="user", content=[block]))
            token = set_max_turns(run.limits.get("max_turns"))
            try:
                self._turns.start(tenant, session_id, run.message)
            finally:
                reset_max_turns(token)
            turn = self._turns.task(session_id)
            assert turn is not None
        except BaseException:
            self._turns.release(session_id)
            self._trackers.pop(session_id, None)
            raise
        timed_out = False
        try:
            max_seconds = run.limits.get("max_seconds")
            left = None if max_seconds is None else max(0.0, max_seconds - (time.monotonic() - started))
            if not await _ended(tracker, turn, left):
                timed_out = True
                await self._turns.cancel(session_id)  # waits for the turn to unwind (INTERRUPTED, idle)
        except asyncio.CancelledError:  # cancelled (or shut down) while the turn runs: stop the turn too
            await asyncio.shield(self._turns.cancel(session_id))
            raise
        finally:
            self._trackers.pop(session_id, None)
        run.input_tokens, run.output_tokens = tracker.input_tokens, tracker.output_tokens
        run.cost_usd, run.turns, run.answer = round(tracker.cost_usd, 6), tracker.turns, tracker.answer
        if run.id in self._cancelled:
            self._end(run, "cancelled", None)
        elif timed_out:
            self._end(run, "timed_out", ("TIME_LIMIT", f"the run took longer than {run.limits['max_seconds']:g} s"))
        elif tracker.over_budget:
            self._end(run, "failed", ("COST_LIMIT", f"the run cost ${tracker.cost_usd:.6f}, over its limit of "
                                                    f"${run.limits['max_cost_usd']:g}"))
        elif tracker.error is not None:
            self._end(run, "failed", tracker.error)
        elif not tracker.done.is_set():  # the turn ended without idle: its session was deleted
            self._end(run, "failed", ("SESSION_GONE", "the run's session was deleted while its turn ran"))
        else:
            self._end(run, "succeeded", None)

    def _interrupt(self, session_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._turns.cancel(session_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    def _end(run: RunRow, status: str, error: tuple[str, str] | None) -> None:
        run.status, run.finished_at = status, now_iso()
        run.error_code, run.error_message = error if error is not None else (None, None)

    async def _finish(self, run: RunRow) -> None:
        await self.store.save(run)
        self._report(run)

    def _report(self, run: RunRow, event_id: str | None = None, first_attempt: int = 1) -> None:
        """Send the outcome to the run's webhook in the background (retries outlive the run's task)."""
        if run.webhook_url is None or run.webhook_secret is None:
            return
        secret = self._box.open(run.webhook_secret).decode()
        event_id = event_id or "evt_" + secrets.token_urlsafe(12)
        payload = {"id": event_id, "type": "run.finished", "created_at": int(time.time()),
                   "run": public_run(run).model_dump(mode="json")}
        task = asyncio.get_running_loop().create_task(
            self._sender.deliver(run.id, event_id, run.webhook_url, secret, payload, first_attempt=first_attempt))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the event observer ----------------------------------------------------------------------------------

    def _observe(self, tenant_id: str, session_id: str, event: Event) -> None:
        tracker = self._trackers.get(session_id)
        if tracker is not None:
            tracker.observe(event)
        if event.type == "state" and event.data.get("state") == "idle" and "parent_tool_call_id" not in event.data:
            idle = self._idle.pop(session_id, None)
            if idle is not None:
                idle.set()


async def _ended(tracker: Tracker, turn: asyncio.Task[None], within_s: float | None) -> bool:
    """Wait for the turn's idle, or for its task to end without one (a deleted session's turn is cancelled
    silently); False when ``within_s`` passed first."""
    idle = asyncio.ensure_future(tracker.done.wait())
    try:
        done, _ = await asyncio.wait({idle, turn}, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        idle.cancel()
    return bool(done)
