"""Start-up: calls that waited for a person when the server stopped are ``abandoned``, and their sessions
are closed as an interrupted turn is (``approval_decision``, ``error SERVER_RESTARTED``, ``state: idle``,
error results for the calls left without one), so none stays in ``requires_action``."""

from __future__ import annotations

import logging

from server.approvals.store import ApprovalStore
from server.contract.events import ApprovalDecisionEvent, ErrorEvent, StateEvent
from server.errors import NotFound
from server.sessions.events import EventLog
from server.sessions.store import SessionStore, now_iso

log = logging.getLogger(__name__)
REASON = "the server stopped while the call waited for a decision"


async def abandon_waiting(store: ApprovalStore, sessions: SessionStore, events: EventLog) -> int:
    """Close every approval left pending by an earlier process; returns how many."""
    rows = await store.abandon_pending(now_iso(), REASON)
    closed: set[str] = set()
    for row in rows:
        try:
            await sessions.get(row.tenant_id, row.session_id)
        except NotFound:
            continue  # deleted since
        await events.last_seq(row.session_id)
        events.append(row.tenant_id, row.session_id, ApprovalDecisionEvent(
            call_id=row.call_id, status="abandoned", decided_by=None, reason=REASON, decided_at=now_iso()))
        if row.session_id not in closed:
            closed.add(row.session_id)
            await _close_dangling_calls(sessions, row.tenant_id, row.session_id)
            events.append(row.tenant_id, row.session_id, ErrorEvent(
                code="SERVER_RESTARTED", message="the server restarted while a tool call waited for approval; "
                                                 "send a new message to go on", status=503))
            events.append(row.tenant_id, row.session_id, StateEvent(state="idle", interrupted=True))
    if rows:
        log.warning("%d tool call(s) waiting for approval were abandoned by the restart", len(rows))
    return len(rows)


async def _close_dangling_calls(sessions: SessionStore, tenant_id: str, session_id: str) -> None:
    """Every tool_use of the stored conversation's last message gets an error result (a valid history)."""
    messages = await sessions.list_messages(tenant_id, session_id)
    if not messages or messages[-1]["role"] != "assistant":
        return
    pending = [b["id"] for b in messages[-1]["content"] if b.get("type") == "tool_use"]
    if pending:
        await sessions.append_message(tenant_id, session_id, "user", [
            {"type": "tool_result", "tool_use_id": call_id, "content": REASON, "is_error": True}
            for call_id in pending])
