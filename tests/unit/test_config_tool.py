"""The `config` tool through the real agent loop: a fake Anthropic over real HTTP asks for setting changes,
the real dispatcher audits each call in the real audit log, and the next model request shows the change;
limits cannot be raised and the policy's fields are read-only."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply
from imageless import imageless_backend

from policies.loader import load_policy
from policies.model import Policy
from server.audit.log import AuditLog
from server.providers.config import RouterConfig
from server.providers.credentials import ProviderCredential, StaticCredentials
from server.providers.failover import ProviderRouter
from server.providers.types import Message, TextBlock
from server.sessions.agent import AgentLoop, MemoryConversation, TurnOptions, TurnOutcome
from server.tools.builtin import default_registry
from server.tools.config_tool import ConfigTool, router_check
from server.tools.context import ToolContext
from server.tools.dispatch import ToolDispatcher

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
CEILING = 4096





@dataclass
class Rig:
    fake: FakeAnthropic
    agent: AgentLoop
    dispatcher: ToolDispatcher
    audit: AuditLog

    async def turn(self, replies: list[Reply], options: TurnOptions | None = None) -> tuple[TurnOutcome, TurnOptions]:
        self.fake.script(replies)
        options = options or TurnOptions(model="claude-sonnet-4-5")
        conversation = MemoryConversation([Message(role="user", blocks=[TextBlock(text="go")])])
        outcome = await self.agent.run(ToolContext(tenant_id="t1", session_id=None), conversation, options)
        return outcome, options


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    policy: Policy = load_policy("default")
    audit = AuditLog(tmp_path / "audit.db")
    await audit.open()
    backend = imageless_backend(lambda tenant: policy)
    with FakeAnthropic() as fake:
        async with httpx.AsyncClient() as http:
            creds = StaticCredentials([ProviderCredential("anthropic", "sk-ant-k-0001", fake.base_url, "env")])
            router = ProviderRouter(RouterConfig(), http, creds)
            registry = default_registry()
            registry.add(ConfigTool(lambda tenant: policy, router_check(router), CEILING).definition())
            dispatcher = ToolDispatcher(registry, backend, audit, lambda tenant: policy)
            try:
                yield Rig(fake, AgentLoop(router, dispatcher, max_output_tokens=CEILING), dispatcher, audit)
            finally:
                await backend.close()
                await audit.close()


def results(outcome: TurnOutcome) -> list[dict[str, Any]]:
    return [c["result"] for c in outcome.tool_calls]


async def test_model_effort_and_output_cap_change_from_the_next_model_call(rig: Rig) -> None:
    """The agent switches model, effort and a lower output cap mid-turn: the next request to the provider
    carries the new model and max_tokens, the turn's options hold the effort, each call is audited."""
    outcome, options = await rig.turn([
        Reply.tool_call("config", {"setting": "model", "value": "claude-opus-4-1"}),
        Reply.tool_call("config", {"setting": "max_output_tokens", "value": 1000}),
        Reply.tool_call("config", {"setting": "effort", "value": "low"}),
        Reply.text("done"),
    ])
    assert outcome.error is None and [r["error"] for r in results(outcome)] == [None, None, None]
    bodies = [r.json() for r in rig.fake.requests]
    assert [b["model"] for b in bodies] == ["claude-sonnet-4-5", "claude-opus-4-1", "claude-opus-4-1",
                                            "claude-opus-4-1"]
    assert [b["max_tokens"] for b in bodies] == [CEILING, CEILING, 1000, 1000]
    assert (options.model, options.effort, options.max_tokens) == ("claude-opus-4-1", "low", 1000)
    assert "config" in {t["name"] for t in bodies[0]["tools"]}  # offered to the model
    records, _ = await rig.audit.list("t1", tool="config", phase="finished")
    assert [(r["decision"], r["error_code"]) for r in records] == [("allowed", None)] * 3


async def test_limits_cannot_be_raised_nor_policy_fields_written(rig: Rig) -> None:
    """Raising the output cap past the server's, writing a timeout or the network, an unknown setting and a
    model no provider serves each fail with a stable code and change nothing."""
    outcome, options = await rig.turn([
        Reply.tool_call("config", {"setting": "max_output_tokens", "value": CEILING + 1}),
        Reply.tool_call("config", {"setting": "max_timeout_s", "value": 99999}),
        Reply.tool_call("config", {"setting": "network", "value": "open"}),
        Reply.tool_call("config", {"setting": "model", "value": "gpt-4o"}),
        Reply.tool_call("config", {"setting": "effort", "value": "extreme"}),
        Reply.tool_call("config", {"setting": "colour", "value": "red"}),
        Reply.text("ok"),
    ])
    codes = [r["error"]["code"] for r in results(outcome)]
    assert codes == ["LIMIT_NOT_RAISABLE", "CONFIG_READ_ONLY", "CONFIG_READ_ONLY", "MODEL_NOT_AVAILABLE",
                     "INVALID_INPUT", "UNKNOWN_SETTING"]
    assert (options.model, options.effort, options.max_tokens) == ("claude-sonnet-4-5", None, None)
    assert {r.json()["max_tokens"] for r in rig.fake.requests} == {CEILING}
    assert {r.json()["model"] for r in rig.fake.requests} == {"claude-sonnet-4-5"}


async def test_reading_settings_and_limits(rig: Rig) -> None:
    """With no setting the tool lists the turn's settings and the policy's limits; with one, that one."""
    outcome, _ = await rig.turn([Reply.tool_call("config", {}),
                                 Reply.tool_call("config", {"setting": "max_timeout_s"}), Reply.text("ok")])
    everything, one = (json.loads(r["output"]) for r in results(outcome))
    policy = load_policy("default")
    assert everything["model"] == "claude-sonnet-4-5" and everything["max_output_tokens"] == CEILING
    assert everything["policy"] == policy.name and everything["network"] == policy.network
    assert one == {"max_timeout_s": policy.max_timeout_s}


async def test_direct_call_reads_but_cannot_write(rig: Rig) -> None:
    """Outside a turn (the direct tool API) there is nothing to configure: reading works, writing says why."""
    ctx = ToolContext(tenant_id="t1", session_id=None)
    read = await rig.dispatcher.run(ctx, "config", {"setting": "policy"})
    assert read.error is None and json.loads(read.output) == {"policy": load_policy("default").name}
    write = await rig.dispatcher.run(ToolContext(tenant_id="t1", session_id=None), "config",
                                     {"setting": "effort", "value": "high"})
    assert write.error is not None and write.error.code == "CONFIG_NO_TURN"
