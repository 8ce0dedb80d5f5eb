"""Runs and approvals through the client (blocking and asyncio), against the real server with a fake
Anthropic upstream: a run waited to its end, a cancel of a finished run, a turn whose tool call waits for
the client's approval, and a denial the model sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_support import sandbox_workspace, server_env
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply
from openanalyst_client import AsyncClient, Client, ConflictError, NotFoundError
from openanalyst_client.events import ApprovalDecisionEvent, ApprovalRequiredEvent, ToolResultEvent

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(150)]

CI = Path(__file__).resolve().parents[2] / "policies" / "presets" / "ci.toml"
ASKING = "".join(line for line in CI.read_text().splitlines(keepends=True) if not line.startswith("disk_")) + \
    'always_ask = ["bash"]\n'


@pytest.fixture
def server(serve: Callable[..., Any], sandbox_image: str, fake: FakeAnthropic, tmp_path: Path) -> Any:
    """Tenant ivy's policy asks before every bash call."""
    policy = tmp_path / "asking.toml"
    policy.write_text(ASKING)
    return serve(env=server_env(fake.base_url, sandbox_workspace(tmp_path / "owner-ws"),
                                OPENANALYST_TENANT_POLICIES=json.dumps({"ivy": str(policy)})))


def test_runs_blocking(server: Any, fake: FakeAnthropic) -> None:
    """create answers at once, wait polls to the end, list and deliveries read back, a finished run's cancel
    changes nothing and an unknown run is a NotFoundError."""
    fake.script([Reply.text("Build is green.")])
    with Client(server.base, tenant="hugo") as oa:
        created = oa.runs.create("check the build", limits={"max_turns": 2})
        assert created.status in ("queued", "running") and created.webhook_secret is None
        done = oa.runs.wait(created.run_id, max_wait=60, interval=0.1)
        assert done.status == "succeeded" and done.answer == "Build is green." and done.finished
        assert done.usage.turns == 1 and done.limits.max_turns == 2
        assert [r.run_id for r in oa.runs.list(status="succeeded")] == [created.run_id]
        assert oa.runs.deliveries(created.run_id).data == []
        assert oa.runs.cancel(created.run_id) == done  # a finished run is answered as it ended
        with pytest.raises(NotFoundError):
            oa.runs.get("run_unknown")


def test_approvals_and_runs_async(server: Any, fake: FakeAnthropic) -> None:
    """A turn's bash call waits; the async client approves it from the event stream and the call runs; a run
    made by the async client ends too."""
    fake.script([Reply.tool_call("bash", {"command": "echo via-client"}), Reply.text("Ran it.")])

    async def main() -> None:
        async with AsyncClient(server.base, tenant="ivy") as oa:
            session = await oa.sessions.create()
            seen: list[Any] = []
            async for event in oa.sessions.send(session.session_id, "go"):
                seen.append(event)
                if isinstance(event, ApprovalRequiredEvent):
                    pending = await oa.approvals.list(session.session_id)
                    assert [p.status for p in pending] == ["pending"]
                    decided = await oa.approvals.approve(session.session_id, event.call_id, reason="ok")
                    assert decided.status == "allowed"
            decision = next(e for e in seen if isinstance(e, ApprovalDecisionEvent))
            assert decision.status == "allowed" and decision.reason == "ok"
            result = next(e for e in seen if isinstance(e, ToolResultEvent))
            assert result.output == "via-client\n"

            fake.script([Reply.text("async run done")])
            run = await oa.runs.create("again")
            done = await oa.runs.wait(run.run_id, max_wait=60, interval=0.1)
            assert done.status == "succeeded" and done.answer == "async run done"

    asyncio.run(main())


def test_denial_blocking(server: Any, fake: FakeAnthropic) -> None:
    """The blocking client denies a waiting call; the model receives the reason; a second decision is a
    ConflictError."""
    fake.script([Reply.tool_call("bash", {"command": "echo nope"}), Reply.text("Fine, skipped.")])
    with Client(server.base, tenant="ivy") as oa:
        session = oa.sessions.create()
        for event in oa.sessions.send(session.session_id, "go"):
            if isinstance(event, ApprovalRequiredEvent):
                assert oa.approvals.deny(session.session_id, event.call_id, reason="no shell today").status \
                    == "denied"
                with pytest.raises(ConflictError):
                    oa.approvals.approve(session.session_id, event.call_id)
        assert "no shell today" in fake.requests[-1].json()["messages"][-1]["content"][0]["content"]
