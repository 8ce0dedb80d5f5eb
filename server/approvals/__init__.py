"""Tool calls that wait for a person's decision (issue 12, point 4; docs/approvals.md)."""

from server.approvals.gate import ApprovalGate, interactive
from server.approvals.recovery import abandon_waiting
from server.approvals.store import ApprovalRow, ApprovalStore

__all__ = ["ApprovalGate", "ApprovalRow", "ApprovalStore", "abandon_waiting", "interactive"]
