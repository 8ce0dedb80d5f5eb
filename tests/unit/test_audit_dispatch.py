"""The real ToolDispatcher writing to the real AuditLog: every call made has one started and one finished record.

Server-side tools run for real; sandbox tools go through the real SandboxBackend, whose image provider
reports no image (no Docker needed), so they fail the way they do on a host without the sandbox image.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from policies.loader import load_policy
from policies.model import Policy
from server.audit.log import AuditLog
from server.errors import ApiError, Forbidden
from server.tools.builtin import default_registry
from server.tools.context import ToolContext
from server.tools.dispatch import ToolDispatcher
from server.tools.sandbox_backend import SandboxBackend
from toolrunner.errors import SandboxImageUnavailable
from toolrunner.manager import CallOutcome
from toolrunner.results import error_result

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def no_image() -> str:
    raise SandboxImageUnavailable("no sandbox image on this host (test)")


def no_config(tag: str) -> Any:
    raise AssertionError("the manager is never built without an image")


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[ToolDispatcher, AuditLog, SandboxBackend]]:
    base = load_policy("default")
    locked = base.model_copy(update={"name": "locked", "denied_tools": ("sleep",)})

    def policy_for(tenant: str) -> Policy:
        return locked if tenant == "locked" else base

    audit = AuditLog(tmp_path / "audit.db")
    await audit.open()
    backend = SandboxBackend(no_config, no_image, policy_for)
    dispatcher = ToolDispatcher(default_registry(), backend, audit, policy_for)
    try:
        yield dispatcher, audit, backend
    finally:
        await backend.close()
        await audit.close()


async def test_calls_made_equal_finished_records(setup: tuple[ToolDispatcher, AuditLog, SandboxBackend]) -> None:
    """Successful, failing, denied and cancelled calls each leave exactly one started and one finished record."""
    dispatcher, audit, _ = setup
    ctx = ToolContext(tenant_id="t1", session_id="s1")
    made = 0
    for _ in range(3):
        await dispatcher.run(ctx, "sleep", {"seconds": 0.001})
        made += 1
    result = await dispatcher.run(ctx, "structured_output", {"x": 1})  # fails inside: no schema given
    made += 1
    assert result.error is not None
    with pytest.raises(ApiError) as unavailable:
        await dispatcher.run(ctx, "bash", {"command": "true"})
    made += 1
    assert unavailable.value.code == "SANDBOX_IMAGE_UNAVAILABLE"
    slow = asyncio.create_task(dispatcher.run(ctx, "sleep", {"seconds": 30}))
    deadline = asyncio.get_running_loop().time() + 10
    while await audit.count("t1", phase="started") < made + 1:  # wait until it is running
        assert asyncio.get_running_loop().time() < deadline, "the slow call never started"
        await asyncio.sleep(0.005)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    made += 1

    assert await audit.count("t1", phase="finished") == made
    assert await audit.count("t1", phase="started") == made
    records, total = await audit.list("t1", per_page=100)
    assert total == 2 * made
    by_call: dict[str, list[str]] = {}
    for record in records:
        by_call.setdefault(record["call_id"], []).append(record["phase"])
    assert all(phases == ["started", "finished"] for phases in by_call.values()) and len(by_call) == made
    finished = [r for r in records if r["phase"] == "finished"]
    codes = [r["error_code"] for r in finished]
    assert codes == [None, None, None, "TOOL_UNAVAILABLE", "SANDBOX_IMAGE_UNAVAILABLE", "CANCELLED"]
    assert all(r["policy"] == "default" for r in records)
    assert (await audit.verify("t1"))["ok"] is True


async def test_a_denied_call_is_recorded_as_denied(setup: tuple[ToolDispatcher, AuditLog, SandboxBackend]) -> None:
    """A call the tenant's policy forbids gets started and finished records with decision "denied"."""
    dispatcher, audit, _ = setup
    with pytest.raises(Forbidden):
        await dispatcher.run(ToolContext(tenant_id="locked", session_id=None), "sleep", {"seconds": 0.001})
    records, total = await audit.list("locked")
    assert total == 2
    assert [(r["phase"], r["decision"]) for r in records] == [("started", "denied"), ("finished", "denied")]
    assert records[0]["reason"] and records[0]["input"] == {"seconds": 0.001}
    assert records[1]["error_code"] == "TOOL_DENIED" and records[1]["policy"] == "locked"
    assert (await audit.verify("locked"))["ok"] is True


class UnresponsiveSandbox:
    """A sandbox whose runner was declared unresponsive mid-call, as the manager reports it."""

    async def run(self, tenant_id: str, session_id: str, tool: str, args: dict[str, Any], *,
                  timeout_s: float | None, on_chunk: Any, call_id: str | None = None) -> CallOutcome:
        result = error_result(tool, "SANDBOX_UNRESPONSIVE", "the sandbox's runner stopped answering")
        return CallOutcome(result, "c0ffee", "sha256:feed")

    async def close_session(self, tenant_id: str, session_id: str) -> None:
        return None


async def test_an_unresponsive_sandbox_is_recorded_with_its_own_code(tmp_path: Path) -> None:
    """SANDBOX_UNRESPONSIVE reaches the caller and the `finished` record unchanged (not folded into INTERNAL)."""
    policy = load_policy("default")
    audit = AuditLog(tmp_path / "audit.db")
    await audit.open()
    try:
        dispatcher = ToolDispatcher(default_registry(), UnresponsiveSandbox(), audit, lambda tenant: policy)
        result = await dispatcher.run(ToolContext(tenant_id="t1", session_id="s1"), "bash", {"command": "true"})
        assert result.error is not None and result.error.code == "SANDBOX_UNRESPONSIVE"
        records, _ = await audit.list("t1")
        finished = [r for r in records if r["phase"] == "finished"]
        assert [(r["error_code"], r["container_id"]) for r in finished] == [("SANDBOX_UNRESPONSIVE", "c0ffee")]
    finally:
        await audit.close()
