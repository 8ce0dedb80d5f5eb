"""The pause between a model's tool call and its run, when the policy says a person must decide.

``ToolDispatcher.check`` asks ``refuse_outside_turn`` (nobody can answer a direct tool call: 403
``APPROVAL_REQUIRED``); ``ToolDispatcher.run_checked`` awaits ``gate`` before the call's audit ``started``
record. In a session's agent turn (marked by ``interactive()``, a context variable the turn's tasks inherit)
the gate stores the pending call, tells the session (``state: requires_action``, ``approval_required``) and
waits for ``decide`` (the approvals route), the policy's timeout or an interrupt. docs/approvals.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from policies.model import Policy
from server.approvals.store import ApprovalRow, ApprovalStore
from server.contract.events import ApprovalDecisionEvent, ApprovalRequiredEvent, StateEvent
from server.errors import Conflict, Forbidden, NotFound
from server.sessions.store import now_iso
from server.tools.context import ToolContext

_INTERACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("approvals_interactive", default=False)
Denier = Callable[[str, str], Awaitable[None]]  # (code, reason): record the call as denied
Decision = Literal["allow", "deny"]


@contextlib.contextmanager
def interactive() -> Iterator[None]:
    """Mark the running turn (and the tasks it starts) as one a person can answer."""
    token = _INTERACTIVE.set(True)
    try:
        yield
    finally:
        _INTERACTIVE.reset(token)


@dataclass
class _Waiting:
    row: ApprovalRow
    future: asyncio.Future[ApprovalRow]


def _stamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ApprovalGate:
    def __init__(self, store: ApprovalStore) -> None:
        self.store = store
        self._waiting: dict[tuple[str, str, str], _Waiting] = {}  # (tenant, session, call) → its waiter

    def waiting(self, session_id: str) -> bool:
        """Whether a call of this session waits for a decision now (its state is ``requires_action``)."""
        return any(key[1] == session_id for key in self._waiting)

    def refuse_outside_turn(self, ctx: ToolContext, policy: Policy, name: str, args: dict[str, Any]) -> None:
        """403 ``APPROVAL_REQUIRED`` for a call that needs a person where nobody can be asked."""
        if _INTERACTIVE.get() and ctx.session_id is not None:
            return  # a person can be asked: ``gate`` decides, once, after the policy check
        asked = policy.ask_reason(name, args)
        if asked is not None:
            raise Forbidden("APPROVAL_REQUIRED", f"{asked}; such a call runs only in a session's agent turn, "
                                                 "where a person approves it (POST /sessions/{id}/approvals/"
                                                 "{call_id})")

    async def gate(self, ctx: ToolContext, policy: Policy, name: str, args: dict[str, Any],
                   deny: Denier) -> str | None:
        """None when no person is needed; the audit note of an approval; raises 403 after ``deny`` otherwise."""
        asked = policy.ask_reason(name, args)
        if asked is None:
            return None
        if ctx.session_id is None or not _INTERACTIVE.get():  # refuse_outside_turn already answered these
            await deny("APPROVAL_REQUIRED", asked)
            raise Forbidden("APPROVAL_REQUIRED", asked)
        now = datetime.now(UTC)
        row = ApprovalRow(ctx.tenant_id, ctx.session_id, ctx.call_id, name, args, asked, "pending", _stamp(now),
                          _stamp(now + timedelta(seconds=policy.approval_timeout_s)), None, None, None, None)
        decided = await self._wait(ctx, row, policy.approval_timeout_s, deny)
        note = _note(decided)
        if decided.status != "allowed":
            await deny(_CODES[decided.status], note)
            raise Forbidden(_CODES[decided.status], note)
        return note

    async def _wait(self, ctx: ToolContext, row: ApprovalRow, timeout_s: float, deny: Denier) -> ApprovalRow:
        key = (row.tenant_id, row.session_id, row.call_id)
        if key in self._waiting:  # a provider repeated an id that waits: a decision could reach either call
            reason = f"call {row.call_id!r} already waits for a decision; a call id must be unique in its turn"
            await deny("APPROVAL_CALL_ID_REUSED", reason)
            raise Forbidden("APPROVAL_CALL_ID_REUSED", reason)
        waiter = _Waiting(row, asyncio.get_running_loop().create_future())
        self._waiting[key] = waiter  # before the first await, so that a concurrent call with this id sees it
        decided = row
        try:
            try:
                await self.store.add(row)
            except Exception:
                self._waiting.pop(key, None)
                raise
            await ctx.emit(StateEvent(state="requires_action"))
            await ctx.emit(ApprovalRequiredEvent(call_id=row.call_id, tool_name=row.tool, arguments=row.arguments,
                                                 reason=row.reason_asked, expires_at=row.expires_at))
            try:
                decided = await asyncio.wait_for(asyncio.shield(waiter.future), timeout_s)
            except TimeoutError:
                decided = self._settle(key, replace(row, status="timed_out", decided_at=now_iso(),
                                                    reason=f"no decision within {timeout_s:g} s"))
        except asyncio.CancelledError:
            decided = self._settle(key, replace(row, status="interrupted", decided_at=now_iso(),
                                                reason="the turn was interrupted while the call waited"))
            await asyncio.shield(self._finish(ctx, decided))
            await asyncio.shield(deny(_CODES["interrupted"], _note(decided)))
            raise
        await self._finish(ctx, decided)
        return decided

    def _settle(self, key: tuple[str, str, str], decided: ApprovalRow) -> ApprovalRow:
        """The call's final row: the first settlement wins (synchronously, so a racing decision sees it)."""
        waiter = self._waiting.pop(key, None)
        if waiter is None or waiter.future.done():
            return waiter.future.result() if waiter is not None else decided
        waiter.future.set_result(decided)
        return decided

    async def _finish(self, ctx: ToolContext, decided: ApprovalRow) -> None:
        await self.store.decide(decided)
        await ctx.emit(ApprovalDecisionEvent(call_id=decided.call_id, status=decided.status,
                                             decided_by=decided.decided_by(), reason=decided.reason,
                                             decided_at=decided.decided_at or now_iso()))
        if decided.status != "interrupted" and not self.waiting(decided.session_id):  # others may still wait
            await ctx.emit(StateEvent(state="tool_use"))

    async def decide(self, tenant_id: str, session_id: str, call_id: str, decision: Decision, reason: str | None,
               key_id: str | None) -> ApprovalRow:
        """A person's decision: the settled row, 409 if the call was already decided, 404 if it never waited."""
        key = (tenant_id, session_id, call_id)
        waiter = self._waiting.get(key)
        if waiter is None or waiter.future.done():
            stored = await self.store.latest(tenant_id, session_id, call_id)
            if stored is None:
                raise NotFound("APPROVAL_NOT_FOUND", f"no call {call_id[:80]!r} waits for a decision in this session")
            raise Conflict("APPROVAL_ALREADY_DECIDED", f"call {call_id[:80]!r} was already decided: {stored.status}"
                           if stored.status != "pending" else f"call {call_id[:80]!r} is being decided")
        status = "allowed" if decision == "allow" else "denied"
        return self._settle(key, replace(waiter.row, status=status, decided_at=now_iso(), decided_by_tenant=tenant_id,
                                         decided_by_key=key_id, reason=reason))


_CODES = {"denied": "APPROVAL_DENIED", "timed_out": "APPROVAL_TIMEOUT", "interrupted": "APPROVAL_INTERRUPTED",
          "abandoned": "APPROVAL_ABANDONED"}


def _note(row: ApprovalRow) -> str:
    """What the audit record (and, on a denial, the model) is told about the decision."""
    if row.status in ("allowed", "denied"):
        text = f"{row.status} by {row.decided_by()} at {row.decided_at}"
    else:
        text = f"{row.status.replace('_', ' ')} at {row.decided_at}"
    return f"{text}: {row.reason}" if row.reason else text
