"""Plug approvals into a wired server: the gate into the dispatcher, and close what a restart left waiting."""

from __future__ import annotations

from server.approvals.gate import ApprovalGate
from server.approvals.recovery import abandon_waiting
from server.approvals.store import ApprovalStore
from server.services import Foundation
from server.tools.dispatch import ToolDispatcher


async def wire_approvals(foundation: Foundation, dispatcher: ToolDispatcher) -> ApprovalGate:
    gate = ApprovalGate(ApprovalStore(foundation.db))
    dispatcher.approvals = gate
    await abandon_waiting(gate.store, foundation.sessions, foundation.events)
    return gate
