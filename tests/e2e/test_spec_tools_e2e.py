"""Issue 10's tool leftovers against ``openanalyst --serve`` as a real process, a fake Anthropic over real HTTP
and the real sandbox: ``GET /v1/tools`` says which tools can run and why not (powershell by the runner's hello
caps, kept across a restart; web_search without a backend; a tool the policy denies), the model is offered
only those, the ``config`` tool changes the turn's model through a session and never a limit, and a skill run
refuses a tool its ``allowed-tools`` do not name, audited as denied."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import parse_sse, read_until_idle, sandbox_workspace, server_env
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply

from policies.loader import PRESETS_DIR

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(240)]

LOCKED = {"X-Tenant-ID": "locked"}
ALICE = {"X-Tenant-ID": "alice"}
READER = """---
name: file-reader
description: Read a file of the workspace and summarise it.
allowed-tools: Read
---
Read the file with read_file and summarise it in one line.
"""


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def env(fake: FakeAnthropic, sandbox_image: str, tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "locked.toml"  # the default preset, javascript denied
    default = (PRESETS_DIR / "default.toml").read_text().replace('name = "default"', 'name = "locked"')
    policy.write_text(default + '\ndenied_tools = ["javascript"]\n')
    return server_env(fake.base_url, sandbox_workspace(tmp_path / "owner-ws"),
                      OPENANALYST_TENANT_POLICIES=json.dumps({"locked": str(policy)}))


def tools(base: str, headers: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{base}/v1/tools", headers=headers or {}, timeout=30)
    assert answer.status_code == 200, answer.text
    return {t["name"]: t for t in answer.json()["data"]}


def call(base: str, name: str, args: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    answer = httpx.post(f"{base}/v1/tools/{name}", json={"input": args}, headers=headers or {}, timeout=120)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_tool_list_says_what_can_run_and_why(serve: Callable[..., Any], env: dict[str, str],
                                              tmp_path: Path) -> None:
    """Every tool the spec names is listed; powershell is unavailable (unknown until a runner said hello,
    then 'no pwsh', and still known after a restart with the same data directory), web_search has no
    backend, web_fetch has no way out under network none, javascript is denied for the locked tenant; the
    reasons are typed."""
    data_dir = tmp_path / "data"
    server = serve(env=env, data_dir=data_dir)
    listed = tools(server.base)
    named = {"read_file", "write_file", "edit_file", "grep_search", "glob_search", "bash", "powershell", "repl",
             "web_search", "web_fetch", "python", "javascript", "agent", "todo_write", "notebook_edit", "skill",
             "tool_search", "config", "structured_output", "sleep", "send_user_message"}
    assert named <= set(listed)
    assert listed["bash"]["available"] is True and listed["bash"]["unavailable_code"] is None
    search = listed["web_search"]
    assert (search["available"], search["unavailable_code"]) == (False, "TOOL_UNAVAILABLE")
    assert "search backend" in search["unavailable_reason"]
    fetch = listed["web_fetch"]  # the default policy has network none: no way out for it
    assert (fetch["available"], fetch["unavailable_code"]) == (False, "TOOL_UNAVAILABLE")
    assert "network = 'none'" in fetch["unavailable_reason"]
    first = listed["powershell"]
    assert (first["allowed"], first["available"], first["unavailable_code"]) == (True, False, "TOOL_UNAVAILABLE")
    assert "not known yet" in first["unavailable_reason"]

    assert call(server.base, "bash", {"command": "true"})["exit_code"] == 0  # a runner starts and says hello
    after = tools(server.base)["powershell"]
    assert (after["available"], after["unavailable_reason"]) == (False, "the sandbox image has no pwsh")
    ran = call(server.base, "powershell", {"command": "Get-Date"})  # the direct API still runs it, and says why
    assert ran["error"]["code"] == "TOOL_UNAVAILABLE"

    locked = tools(server.base, LOCKED)["javascript"]
    assert (locked["allowed"], locked["available"], locked["unavailable_code"]) == (False, False, "TOOL_DENIED")
    assert tools(server.base)["javascript"]["available"] is True

    assert server.stop() == 0
    again = serve(env=env, data_dir=data_dir)  # the hello's caps were kept for this image tag
    assert tools(again.base)["powershell"]["unavailable_reason"] == "the sandbox image has no pwsh"


def test_config_through_a_session_turn(serve: Callable[..., Any], env: dict[str, str], fake: FakeAnthropic) -> None:
    """The model is offered config but not powershell, web_search or web_fetch; it switches the turn's model
    (the next request to the provider carries it), cannot raise a limit, and each call is audited; the
    direct tool API reads settings but cannot write them."""
    server = serve(env=env)
    session = httpx.post(f"{server.base}/sessions", json={"model": "claude-sonnet-4-5"}, timeout=30).json()
    fake.script([Reply.tool_call("config", {"setting": "model", "value": "claude-opus-4-1"}),
                 Reply.tool_call("config", {"setting": "max_timeout_s", "value": 3600}),
                 Reply.text("switched")])
    with httpx.stream("POST", f"{server.base}/sessions/{session['session_id']}/message",
                      json={"message": "use opus"}, timeout=120) as response:
        events = read_until_idle(response)
    results = [d for k, d, _ in events if k == "tool_result"]
    assert [r["tool_name"] for r in results] == ["config", "config"]
    assert results[0]["error"] is None and results[1]["error"]["code"] == "CONFIG_READ_ONLY"
    bodies = [r.json() for r in fake.requests]
    offered = {t["name"] for t in bodies[0]["tools"]}
    assert "config" in offered and not offered & {"powershell", "web_search", "web_fetch"}
    assert [b["model"] for b in bodies] == ["claude-sonnet-4-5", "claude-opus-4-1", "claude-opus-4-1"]
    records = httpx.get(f"{server.base}/v1/audit", params={"tool": "config", "phase": "finished"}).json()["data"]
    assert [r["error_code"] for r in records] == [None, "CONFIG_READ_ONLY"]

    read = call(server.base, "config", {"setting": "network"})
    assert read["error"] is None and json.loads(read["output"]) == {"network": "none"}
    write = call(server.base, "config", {"setting": "effort", "value": "high"})
    assert write["error"]["code"] == "CONFIG_NO_TURN"


def test_skill_run_refuses_tools_outside_allowed_tools(serve: Callable[..., Any], env: dict[str, str],
                                                       fake: FakeAnthropic) -> None:
    """A tenant skill allowing only Read: its run offers read_file (and the conversation tools) but not
    bash; a bash call anyway is refused TOOL_NOT_ALLOWED_BY_SKILL, the model gets the error, the audit log has
    it as denied; read_file runs; the same tenant's plain chat still has bash."""
    server = serve(env=env)
    call(server.base, "write_file", {"path": ".openanalyst/skills/file-reader/SKILL.md", "content": READER}, ALICE)
    call(server.base, "write_file", {"path": "notes.txt", "content": "four words are here\n"}, ALICE)
    fake.script([Reply.tool_call("bash", {"command": "cat notes.txt"}),
                 Reply.tool_call("read_file", {"path": "notes.txt"}), Reply.text("Four words.")])
    with httpx.stream("POST", f"{server.base}/v1/skills/file-reader/run", json={"input": "summarise notes.txt"},
                      headers=ALICE, timeout=120) as response:
        assert response.status_code == 200
        events = list(parse_sse(response.iter_lines()))
    offered = {t["name"] for t in fake.requests[0].json()["tools"]}
    assert "read_file" in offered and "bash" not in offered and "write_file" not in offered
    second = fake.requests[1].json()["messages"][-1]["content"][0]
    assert second["is_error"] is True and "TOOL_NOT_ALLOWED_BY_SKILL" in json.dumps(second)
    results = [d for k, d, _ in events if k == "tool_result"]
    assert [(r["tool_name"], r["error"]) for r in results][-1] == ("read_file", None)
    records = httpx.get(f"{server.base}/v1/audit", params={"tool": "bash"}, headers=ALICE).json()["data"]
    assert [(r["phase"], r["decision"], r.get("error_code")) for r in records] == [
        ("started", "denied", None), ("finished", "denied", "TOOL_NOT_ALLOWED_BY_SKILL")]

    fake.script([Reply.text("plain")])
    httpx.post(f"{server.base}/v1/chat", json={"message": "hi", "stream": False}, headers=ALICE, timeout=60)
    assert "bash" in {t["name"] for t in fake.requests[-1].json()["tools"]}
