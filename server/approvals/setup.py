"""Plug approvals into a wired server: the gate into the dispatcher, and close what a restart left waiting."""

from __future__ import annotations

from server.approvals.gate import ApprovalGate
from server.approvals.recovery import abandon_waiting
from server.approvals.store import ApprovalStore
from server.services import Services


async def wire_approvals(services: Services) -> None:
    gate = ApprovalGate(ApprovalStore(services.db))
    services.dispatcher.approvals = gate
    services.approvals = gate
    await abandon_waiting(gate.store, services.sessions, services.events)
