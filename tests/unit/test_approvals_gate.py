"""The approval gate binds a person's decision to the one call it showed: two calls of one turn that share a
call id (ids come from the provider's answer; some servers repeat them) cannot both wait, and the refused one
is recorded as denied."""

from __future__ import annotations

import asyncio

import pytest
from store_support import StoreFactory

from policies.loader import load_policy
from server.approvals.gate import ApprovalGate, interactive
from server.approvals.store import ApprovalStore
from server.errors import Forbidden
from server.store.store import Store
from server.tools.context import ToolContext


@pytest.mark.anyio
async def test_a_repeated_call_id_cannot_take_over_the_decision(make_store: StoreFactory) -> None:
    """Of two concurrent calls with one id, the second is refused and recorded; the decision reaches the first
    (on both backends: the approval rows' identity column differs between them)."""
    async with make_store() as db:
        await _scenario(db)


async def _scenario(db: Store) -> None:
    gate = ApprovalGate(ApprovalStore(db))
    policy = load_policy("ci").model_copy(update={"always_ask": ("bash",)})
    denied: list[tuple[str, str]] = []

    async def deny(code: str, reason: str) -> None:
        denied.append((code, reason))

    async def call(command: str) -> str | None:
        ctx = ToolContext(tenant_id="alice", session_id="s1", call_id="toolu_same")
        return await gate.gate(ctx, policy, "bash", {"command": command}, deny)

    with interactive():
        shown = asyncio.create_task(call("echo harmless"))
        hidden = asyncio.create_task(call("rm -rf /workspace"))
        with pytest.raises(Forbidden) as refused:
            await asyncio.wait_for(hidden, 10)
        assert refused.value.code == "APPROVAL_CALL_ID_REUSED"
        assert [code for code, _ in denied] == ["APPROVAL_CALL_ID_REUSED"]
        assert gate.waiting("s1")
        row = await gate.decide("alice", "s1", "toolu_same", "allow", None, None)
        assert row.arguments == {"command": "echo harmless"}
        assert (await shown) is not None

    rows = await gate.store.for_session("alice", "s1")
    assert [(r.arguments["command"], r.status) for r in rows] == [("echo harmless", "allowed")]
