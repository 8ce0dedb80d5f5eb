"""Which tools can be offered: a tool's probe (image capabilities from the runner's hello, a configured
backend) and a skill run's scope; the capabilities survive a restart in the data directory; a call outside a
skill's allowed-tools is refused and audited as denied; the agent loop offers only what can run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from imageless import imageless_backend

from policies.loader import load_policy
from policies.model import Policy
from server.audit.log import AuditLog
from server.errors import Forbidden
from server.providers.config import RouterConfig
from server.providers.credentials import StaticCredentials
from server.providers.failover import ProviderRouter
from server.sessions.agent import AgentLoop
from server.skills.model import Skill
from server.skills.scope import CONVERSATION_TOOLS, tool_name, tool_scope
from server.tools.builtin import default_registry
from server.tools.context import ToolContext
from server.tools.dispatch import ToolDispatcher
from server.tools.image_caps import CapsStore, program_probe
from server.tools.web_fetch import network_probe
from server.tools.web_search import web_search_tool

pytestmark = [pytest.mark.timeout(30)]


def skill(name: str, tools: list[str] | None) -> Skill:
    return Skill(name=name, description="d", source="server", instructions="i", path=name, allowed_tools=tools)


def test_caps_store_keeps_capabilities_per_image_across_restarts(tmp_path: Path) -> None:
    """What a runner said for one image tag is read back by a new store (a restarted server), for that tag
    only; the file is private to the server."""
    path = tmp_path / "image-caps.json"
    CapsStore(path).put("openanalyst/sandbox:aaa", {"pwsh": False, "node": True})
    again = CapsStore(path)
    assert again.get("openanalyst/sandbox:aaa") == {"pwsh": False, "node": True}
    assert again.get("openanalyst/sandbox:bbb") is None
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("{not json")
    assert CapsStore(path).get("openanalyst/sandbox:aaa") is None  # unreadable: unknown, not a crash


def test_program_probe_says_why() -> None:
    """Unknown capabilities and a missing program both make the tool unavailable, each with its reason."""
    caps: dict[str, dict[str, bool] | None] = {"now": None}
    probe = program_probe(lambda: caps["now"], "pwsh")
    assert "not known yet" in (probe("t1") or "")
    caps["now"] = {"pwsh": False}
    assert probe("t1") == "the sandbox image has no pwsh"
    caps["now"] = {"pwsh": True}
    assert probe("t1") is None


def test_web_fetch_needs_an_allowlist_policy() -> None:
    """web_fetch goes out only through an allowlist tenant's egress proxy: unavailable, and why, for others."""
    base = load_policy("default")
    policies = {"shut": base, "open": base.model_copy(update={"network": "open"}),
                "listed": base.model_copy(update={"network": "allowlist"})}
    probe = network_probe(policies.__getitem__)
    assert probe("listed") is None
    assert "network = 'none'" in (probe("shut") or "") and "network = 'open'" in (probe("open") or "")


def test_registry_status_and_web_search_without_backend() -> None:
    """GET /v1/tools' fields: denied by policy first, then the probe; web_search without a backend says so."""
    registry = default_registry()
    registry.add(web_search_tool(None))
    registry.set_probe("powershell", program_probe(lambda: {"pwsh": False}, "pwsh"))
    assert registry.status("bash", "t1", True) == {"available": True, "unavailable_code": None,
                                                   "unavailable_reason": None}
    assert registry.status("bash", "t1", False)["unavailable_code"] == "TOOL_DENIED"
    assert registry.status("powershell", "t1", True) == {"available": False, "unavailable_code": "TOOL_UNAVAILABLE",
                                                   "unavailable_reason": "the sandbox image has no pwsh"}
    search = registry.status("web_search", "t1", True)
    assert search["unavailable_code"] == "TOOL_UNAVAILABLE" and "search backend" in search["unavailable_reason"]


def test_skill_scope_is_the_union_in_our_names() -> None:
    """Claude-Code names map to ours, a command pattern allows its tool, lists are united, the conversation
    tools stay, and a skill without a list leaves the run unscoped."""
    assert tool_name("Read") == "read_file" and tool_name("Bash(git status:*)") == "bash"
    assert tool_name("read_file") == "read_file" and tool_name("WebFetch") == "web_fetch"
    scope = tool_scope([skill("a", ["Read", "Grep"]), skill("b", ["bash"])])
    assert scope == frozenset({"read_file", "grep_search", "bash"}) | CONVERSATION_TOOLS
    assert tool_scope([skill("a", ["Read"]), skill("b", None)]) is None
    assert tool_scope([]) is None




@pytest.fixture
async def dispatcher(tmp_path: Path) -> AsyncIterator[tuple[ToolDispatcher, AuditLog]]:
    policy: Policy = load_policy("default")
    audit = AuditLog(tmp_path / "audit.db")
    await audit.open()
    backend = imageless_backend(lambda tenant: policy)
    registry = default_registry()
    registry.set_probe("powershell", program_probe(lambda: {"pwsh": False}, "pwsh"))
    try:
        yield ToolDispatcher(registry, backend, audit, lambda tenant: policy), audit
    finally:
        await backend.close()
        await audit.close()


@pytest.mark.anyio
async def test_call_outside_the_skill_scope_is_refused_and_audited(
        dispatcher: tuple[ToolDispatcher, AuditLog]) -> None:
    """In a skill run allowing only read_file, a bash call is 403 TOOL_NOT_ALLOWED_BY_SKILL with a started
    and a finished record marked denied; a conversation tool still runs."""
    tools, audit = dispatcher
    ctx = ToolContext(tenant_id="t1", session_id=None, skill_scope=tool_scope([skill("s", ["Read"])]))
    with pytest.raises(Forbidden) as refused:
        await tools.run(ctx, "bash", {"command": "id"})
    assert refused.value.code == "TOOL_NOT_ALLOWED_BY_SKILL" and "'bash'" in refused.value.message
    records, _ = await audit.list("t1", tool="bash")
    assert [(r["phase"], r["decision"]) for r in records] == [("started", "denied"), ("finished", "denied")]
    assert records[1]["error_code"] == "TOOL_NOT_ALLOWED_BY_SKILL"
    done = await tools.run(ctx, "todo_write", {"todos": []})
    assert done.error is None


@pytest.mark.anyio
async def test_agent_offers_only_what_can_run(dispatcher: tuple[ToolDispatcher, AuditLog]) -> None:
    """The model's tool list leaves out powershell on an image without pwsh, and in a skill run every tool
    the skill does not allow; a sub-agent inherits the scope."""
    tools, _ = dispatcher
    async with httpx.AsyncClient() as http:
        agent = AgentLoop(ProviderRouter(RouterConfig(), http, StaticCredentials([])), tools)
        plain = {s.name for s in agent.tool_specs(ToolContext(tenant_id="t1", session_id=None))}
        assert "bash" in plain and "powershell" not in plain
        ctx = ToolContext(tenant_id="t1", session_id=None, skill_scope=tool_scope([skill("s", ["Read", "Task"])]))
        scoped = {s.name for s in agent.tool_specs(ctx)}
        assert scoped == {"read_file", "agent", "todo_write", "send_user_message", "tool_search", "sleep"}
        assert {s.name for s in agent.tool_specs(ctx.child("call_1"))} == scoped
