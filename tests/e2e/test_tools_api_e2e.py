"""The direct tool API over real HTTP, with a real sandbox: listing, one call, streaming, session events,
policy denial, the concurrency cap, server tools; and start-up refusals that protect the data directory."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import parse_sse, sandbox_workspace

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]

POLICY = """
name = "locked"
cpus = 0.5
memory_mb = 256
pids = 128
tmpfs_mb = 16
nofile = 256
fsize_mb = 16
default_timeout_s = 20
max_timeout_s = 60
output_cap_bytes = 4096
max_concurrent_calls = 1
denied_tools = ["javascript"]
"""
BOB = {"X-Tenant-ID": "bob"}
CAROL = {"X-Tenant-ID": "carol"}


@pytest.fixture
def server(serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> Iterator[Any]:
    """A server where tenant bob runs under a locked-down policy file and carol under the default."""
    policy = tmp_path / "locked.toml"
    policy.write_text(POLICY)
    env = {"OPENANALYST_OWNER_WORKSPACE": str(sandbox_workspace(tmp_path / "owner-ws")),
           "OPENANALYST_SANDBOX_LABELS": json.dumps({"openanalyst.test": "1"}),
           "OPENANALYST_TENANT_POLICIES": json.dumps({"bob": str(policy)})}
    data_dir = tmp_path / "data"
    started = serve(env=env, data_dir=data_dir)
    yield started
    if started.proc.poll() is None:
        assert started.stop() == 0


def test_tool_list_and_plain_call(server: Any) -> None:
    """`GET /v1/tools` lists every tool with its JSON schema and whether the caller's policy allows it; a call
    answers the whole result shape."""
    tools = {t["name"]: t for t in httpx.get(f"{server.base}/v1/tools", headers=BOB).json()["data"]}
    assert {"bash", "repl", "read_file", "grep_search", "glob_search", "notebook_edit", "todo_write",
            "agent", "tool_search"} <= set(tools)
    assert tools["bash"]["input_schema"]["required"] == ["command"]
    assert tools["javascript"]["allowed"] is False and tools["python"]["allowed"] is True
    result = httpx.post(f"{server.base}/v1/tools/write_file", headers=CAROL, timeout=30,
                        json={"input": {"path": "a/b.txt", "content": "x\ny\n"}}).json()
    assert result["error"] is None and result["exit_code"] == 0
    assert set(result) >= {"call_id", "tool_name", "output", "exit_code", "duration_ms", "truncated",
                           "timed_out", "limit", "error"}
    read = httpx.post(f"{server.base}/v1/tools/read_file", headers=CAROL, timeout=30,
                      json={"input": {"path": "a/b.txt"}}).json()
    assert "x" in read["output"] and "y" in read["output"]


def test_errors_have_stable_codes(server: Any) -> None:
    """Unknown tool 404, bad input 422, denied by policy 403 (and audited), unknown body field 422."""
    base = server.base
    assert httpx.post(f"{base}/v1/tools/teleport", json={"input": {}}).json()["error"]["code"] == "TOOL_NOT_FOUND"
    bad = httpx.post(f"{base}/v1/tools/bash", json={"input": {"command": 3}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "INVALID_TOOL_INPUT"
    extra = httpx.post(f"{base}/v1/tools/bash", json={"input": {"command": "true"}, "surprise": 1})
    assert extra.status_code == 422
    denied = httpx.post(f"{base}/v1/tools/javascript", json={"input": {"code": "1"}}, headers=BOB, timeout=30)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "TOOL_DENIED"
    streamed = httpx.post(f"{base}/v1/tools/javascript", json={"input": {"code": "1"}, "stream": True},
                          headers=BOB, timeout=30)
    assert streamed.status_code == 403
    records = httpx.get(f"{base}/v1/audit", params={"tool": "javascript"}, headers=BOB).json()["data"]
    assert [(r["phase"], r["decision"]) for r in records] == [("started", "denied"), ("finished", "denied")] * 2


def test_concurrency_cap_answers_429(server: Any) -> None:
    """Over the tenant's concurrent-call cap a call is refused with 429 and Retry-After, not queued forever."""
    base = server.base
    httpx.post(f"{base}/v1/tools/bash", json={"input": {"command": "true"}}, headers=BOB, timeout=30)
    started = threading.Event()

    def slow() -> None:
        with httpx.stream("POST", f"{base}/v1/tools/bash", headers=BOB, timeout=30,
                          json={"input": {"command": "echo go; sleep 3"}, "stream": True}) as response:
            for kind, _, _ in parse_sse(response.iter_lines()):
                if kind == "tool_output":
                    started.set()

    worker = threading.Thread(target=slow)
    worker.start()
    assert started.wait(20)
    refused = httpx.post(f"{base}/v1/tools/bash", json={"input": {"command": "true"}}, headers=BOB, timeout=30)
    worker.join(30)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "TOO_MANY_CALLS" and int(refused.headers["Retry-After"]) >= 1
    # Another tenant is not affected by bob's cap.
    assert httpx.post(f"{base}/v1/tools/bash", json={"input": {"command": "true"}}, headers=CAROL,
                      timeout=30).json()["exit_code"] == 0


def test_streamed_call_and_session_events(server: Any) -> None:
    """`stream: true` answers tool_output chunks then tool_result; a call with a session_id shares the
    session's shell and shows up in its event stream."""
    base = server.base
    session_id = httpx.post(f"{base}/sessions", headers=CAROL).json()["session_id"]
    httpx.post(f"{base}/v1/tools/bash", headers=CAROL, timeout=30,
               json={"input": {"command": "export GREETING=hi; mkdir -p d && cd d"}, "session_id": session_id})
    with httpx.stream("POST", f"{base}/v1/tools/bash", headers=CAROL, timeout=30,
                      json={"input": {"command": "echo $GREETING; pwd"}, "session_id": session_id,
                            "stream": True}) as response:
        events = list(parse_sse(response.iter_lines()))
    kinds = [k for k, _, _ in events]
    assert kinds[-1] == "tool_result" and "tool_output" in kinds
    assert events[-1][1]["output"] == "hi\n/workspace/d\n"
    chunks = "".join(d["data"] for k, d, _ in events if k == "tool_output")
    assert chunks == "hi\n/workspace/d\n"
    with httpx.stream("GET", f"{base}/sessions/{session_id}/events", params={"after": 0}, headers=CAROL,
                      timeout=30) as response:
        seen = []
        for kind, data, _ in parse_sse(response.iter_lines()):
            seen.append((kind, data))
            if len([k for k, _ in seen if k == "tool_result"]) == 2:
                break
    assert [k for k, _ in seen if k in ("tool_call", "tool_result")] == ["tool_call", "tool_result"] * 2
    # Other tenants cannot use the session.
    foreign = httpx.post(f"{base}/v1/tools/bash", headers=BOB, timeout=30,
                         json={"input": {"command": "true"}, "session_id": session_id})
    assert foreign.status_code == 404


def test_server_tools(server: Any) -> None:
    """todo_write shows in the session's details, tool_search finds tools, send_user_message is an event,
    sleep is bounded."""
    base = server.base
    session_id = httpx.post(f"{base}/sessions", headers=CAROL).json()["session_id"]
    todos = [{"content": "write tests", "status": "in_progress"}, {"content": "ship", "status": "pending"}]
    done = httpx.post(f"{base}/v1/tools/todo_write", json={"input": {"todos": todos}, "session_id": session_id},
                      headers=CAROL).json()
    assert done["error"] is None
    details = httpx.get(f"{base}/sessions/{session_id}", headers=CAROL).json()
    assert [t["content"] for t in details["todos"]] == ["write tests", "ship"]
    found = httpx.post(f"{base}/v1/tools/tool_search", json={"input": {"query": "search file contents"}}).json()
    assert found["output"].splitlines()[0].startswith("grep_search")
    httpx.post(f"{base}/v1/tools/send_user_message", headers=CAROL,
               json={"input": {"message": "halfway there"}, "session_id": session_id})
    with httpx.stream("GET", f"{base}/sessions/{session_id}/events", params={"after": 0}, headers=CAROL,
                      timeout=30) as response:
        for kind, data, _ in parse_sse(response.iter_lines()):
            if kind == "message":
                assert data["content"][0]["text"] == "halfway there"
                break
    too_long = httpx.post(f"{base}/v1/tools/sleep", json={"input": {"seconds": 3600}})
    assert too_long.status_code == 422


def test_bad_policy_file_stops_start(serve: Callable[..., Any], tmp_path: Path) -> None:
    """A policy file with a bad field stops the start, naming the file and the field."""
    bad = tmp_path / "bad.toml"
    bad.write_text(POLICY.replace("pids = 128", "pids = -5"))
    with pytest.raises(AssertionError) as failed:
        serve(env={"OPENANALYST_SANDBOX_POLICY": str(bad)})
    assert str(bad) in str(failed.value) and "pids" in str(failed.value)


def test_owner_workspace_overlapping_data_dir_is_refused(serve: Callable[..., Any], tmp_path: Path) -> None:
    """An owner workspace that contains the data directory (audit key, credentials) is refused at start."""
    with pytest.raises(AssertionError) as failed:
        serve(env={"OPENANALYST_OWNER_WORKSPACE": str(tmp_path)}, data_dir=tmp_path / "data")
    assert "overlaps the data directory" in str(failed.value)
