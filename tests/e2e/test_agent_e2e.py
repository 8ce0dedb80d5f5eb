"""The agent loop end to end: the server as a real process, a fake Anthropic server speaking the real SSE wire
format over HTTP, and tool calls running in a real sandbox container."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import (
    TEST_KEY,
    parse_sse,
    read_until_idle,
    sandbox_workspace,
    server_env,
)
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]

ALICE = {"X-Tenant-ID": "alice"}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def agent_server(serve: Callable[..., Any], fake: FakeAnthropic, sandbox_image: str, tmp_path: Path) -> Iterator[Any]:
    """A server whose only provider is the fake, with the sandbox image already built."""
    data_dir = tmp_path / "data"
    server = serve(env=server_env(fake.base_url, sandbox_workspace(tmp_path / "owner-ws")), data_dir=data_dir)
    yield server
    if server.proc.poll() is None:
        assert server.stop() == 0


def subscribe(base: str, session_id: str, headers: dict[str, str], sink: list[tuple[str, dict[str, Any], str | None]],
              ready: threading.Event, stop: threading.Event) -> threading.Thread:
    """Follow /sessions/{id}/events in a thread until the turn's idle arrives."""

    def run() -> None:
        with httpx.stream("GET", f"{base}/sessions/{session_id}/events", headers=headers, timeout=60) as response:
            for kind, data, event_id in parse_sse(response.iter_lines()):
                if kind == "snapshot":
                    ready.set()
                    continue
                sink.append((kind, data, event_id))
                if kind == "state" and data.get("state") == "idle":
                    stop.set()
                    return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def ordered_subsequence(kinds: list[str], wanted: list[str]) -> bool:
    it = iter(kinds)
    return all(any(k == w for k in it) for w in wanted)


def test_bash_tool_turn_end_to_end(agent_server: Any, fake: FakeAnthropic) -> None:
    """A model asking for bash writes and reads a file in the tenant's workspace, then answers; the client,
    a second subscriber, the stored history and the audit log all tell the same story."""
    fake.script([
        Reply.tool_call("bash", {"command": "echo hello-from-sandbox > note.txt && cat note.txt"},
                        text="Let me write it."),
        Reply.text("The file says hello-from-sandbox."),
    ])
    base = agent_server.base
    session_id = httpx.post(f"{base}/sessions", json={"title": "e2e"}, headers=ALICE).json()["session_id"]

    follower: list[tuple[str, dict[str, Any], str | None]] = []
    ready, done = threading.Event(), threading.Event()
    thread = subscribe(base, session_id, ALICE, follower, ready, done)
    assert ready.wait(10)

    with httpx.stream("POST", f"{base}/sessions/{session_id}/message", json={"message": "write a note"},
                      headers=ALICE, timeout=60) as response:
        assert response.status_code == 200
        events = read_until_idle(response)
    assert done.wait(30)
    thread.join(5)

    kinds = [k for k, _, _ in events]
    assert ordered_subsequence(kinds, ["state", "assistant_delta", "tool_call", "tool_result", "usage", "message",
                                       "state"]), kinds
    assert events[-1][:2] == ("state", {"state": "idle"})
    text = "".join(d["text"] for k, d, _ in events if k == "assistant_delta")
    assert text == "Let me write it.The file says hello-from-sandbox."
    call = next(d for k, d, _ in events if k == "tool_call")
    result = next(d for k, d, _ in events if k == "tool_result")
    assert call["tool_name"] == "bash" and result["id"] == call["id"]
    assert result["output"] == "hello-from-sandbox\n" and result["exit_code"] == 0
    usage = [d for k, d, _ in events if k == "usage"]
    assert usage[0]["provider"] == "anthropic" and usage[0]["input_tokens"] > 0

    # The second subscriber saw the same events, with the same sequence numbers.
    assert [(k, i) for k, _, i in follower] == [(k, i) for k, _, i in events if k != "snapshot"]

    workspace_file = agent_server.data_dir / "workspaces" / "alice" / "note.txt"
    assert workspace_file.read_text() == "hello-from-sandbox\n"

    # The model got the tool result back, tied to its tool_use id.
    second = fake.requests[1].json()
    tool_result = second["messages"][-1]["content"][0]
    assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == call["id"]
    assert "hello-from-sandbox" in tool_result["content"]

    history = httpx.get(f"{base}/sessions/{session_id}", headers=ALICE).json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[1]["content"][1] == {"type": "tool_use", "id": call["id"], "name": "bash",
                                        "input": call["arguments"]}
    assert history[3]["content"] == [{"type": "text", "text": "The file says hello-from-sandbox."}]

    audit = httpx.get(f"{base}/v1/audit", params={"session_id": session_id}, headers=ALICE).json()["data"]
    records = [(r["phase"], r["tool"], r["call_id"]) for r in audit]
    assert [r for r in records if r[1] == "bash"] == [("started", "bash", call["id"]), ("finished", "bash", call["id"])]
    # The file the call wrote is in its change report: a record pair of its own, tied to the call's id.
    assert [r for r in records if r[1] == "changes"] == [("started", "changes", call["id"] + ".changes"),
                                                         ("finished", "changes", call["id"] + ".changes")]
    report = json.loads(next(r for r in audit if r["tool"] == "changes" and r["phase"] == "finished")["output"])
    assert [(f["path"], f["change"]) for f in report["files"]] == [("note.txt", "created")]
    assert result["changes"]["files"][0]["sha256"] == hashlib.sha256(b"hello-from-sandbox\n").hexdigest()
    bash_records = [r for r in audit if r["tool"] == "bash"]
    assert bash_records[1]["output_sha256"] == hashlib.sha256(result["output"].encode()).hexdigest()
    assert bash_records[0]["input"] == call["arguments"]
    assert httpx.get(f"{base}/v1/audit/verify", headers=ALICE).json()["ok"] is True
    # The fake's key never leaks into what the server stored or streams.
    assert TEST_KEY not in json.dumps([events, history, audit])


def test_interrupt_mid_tool_keeps_history_valid(agent_server: Any, fake: FakeAnthropic) -> None:
    """Interrupting a turn while a tool runs stops the tool, closes the turn, and the next message works."""
    fake.script([Reply.tool_call("bash", {"command": "sleep 60"}), Reply.text("fresh answer")])
    base = agent_server.base
    session_id = httpx.post(f"{base}/sessions", headers=ALICE).json()["session_id"]
    with httpx.stream("POST", f"{base}/sessions/{session_id}/message", json={"message": "wait a while"},
                      headers=ALICE, timeout=60) as response:
        seen: list[str] = []
        for kind, data, _ in parse_sse(response.iter_lines()):
            seen.append(kind)
            if kind == "tool_call":
                answer = httpx.post(f"{base}/sessions/{session_id}/interrupt", headers=ALICE, timeout=30)
                assert answer.json() == {"session_id": session_id, "interrupted": True}
            if kind == "state" and data.get("state") == "idle":
                assert data.get("interrupted") is True
                break
    assert "tool_result" in seen and "error" in seen

    history = httpx.get(f"{base}/sessions/{session_id}", headers=ALICE).json()
    assert history["state"] == "idle"
    last = history["messages"][-1]
    assert last["role"] == "user" and last["content"][0]["type"] == "tool_result"
    assert last["content"][0]["is_error"] is True

    # The sandbox's sleep is gone and the session takes the next message.
    ps = httpx.post(f"{base}/v1/tools/bash", json={"input": {"command": "ps -eo args"}}, headers=ALICE).json()
    assert "sleep 60" not in ps["output"]
    with httpx.stream("POST", f"{base}/sessions/{session_id}/message", json={"message": "again"},
                      headers=ALICE, timeout=60) as response:
        events = read_until_idle(response)
    assert "".join(d["text"] for k, d, _ in events if k == "assistant_delta") == "fresh answer"
    # What the model received next alternates roles, and every tool_use has its result.
    messages = fake.requests[-1].json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert [b["type"] for b in messages[2]["content"]] == ["tool_result", "text"]
    finished = [r for r in httpx.get(f"{base}/v1/audit", params={"phase": "finished"}, headers=ALICE).json()["data"]
                if r["tool"] == "bash" and r["session_id"] == session_id]
    assert finished[0]["error_code"] == "CANCELLED"


def test_quick_chat_stream_and_json(agent_server: Any, fake: FakeAnthropic) -> None:
    """`POST /v1/chat` streams SSE by default, and with stream false answers one JSON object with the tool
    calls and usage; the throwaway conversation still runs its tools in the caller's sandbox."""
    base = agent_server.base
    fake.script([Reply.text("Ownership means one owner.")])
    with httpx.stream("POST", f"{base}/v1/chat", json={"message": "Explain Rust ownership"}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_until_idle(response)
    assert "".join(d["text"] for k, d, _ in events if k == "assistant_delta") == "Ownership means one owner."

    fake.script([Reply.tool_call("python", {"code": "print(6 * 7)"}), Reply.text("It is 42.")])
    answer = httpx.post(f"{base}/v1/query", json={"message": "compute", "stream": False, "effort": "high"},
                        timeout=60, headers=ALICE)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["message"] == "It is 42."
    assert body["tool_calls"][0]["tool_name"] == "python"
    assert body["tool_calls"][0]["result"]["output"] == "42\n"
    assert body["usage"]["output_tokens"] > 0 and body["usage"]["provider"] == "anthropic"
    assert fake.requests[-2].json()["thinking"]["type"] == "enabled"  # effort reached the provider


def test_structured_output_validates_against_the_request_schema(agent_server: Any, fake: FakeAnthropic) -> None:
    """With an output_schema the model gets a structured_output tool; an object that breaks the schema is sent
    back as an error, a valid one ends the turn and is returned."""
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
              "additionalProperties": False}
    fake.script([Reply.tool_call("structured_output", {"answer": "forty-two"}),
                 Reply.tool_call("structured_output", {"answer": 42})])
    answer = httpx.post(f"{agent_server.base}/v1/chat", timeout=60,
                        json={"message": "answer", "stream": False, "output_schema": schema})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["structured_output"] == {"answer": 42}
    first = body["tool_calls"][0]["result"]
    assert first["error"]["code"] == "INVALID_INPUT" and "answer" in first["error"]["message"]
    tools = {t["name"]: t for t in fake.requests[0].json()["tools"]}
    assert tools["structured_output"]["input_schema"] == schema


def test_no_provider_configured(serve: Callable[..., Any]) -> None:
    """Without any provider the chat answers 503 NO_PROVIDER_CONFIGURED naming how to add one."""
    server = serve()
    answer = httpx.post(f"{server.base}/v1/chat", json={"message": "hi", "stream": False}, timeout=30)
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "NO_PROVIDER_CONFIGURED" and "PUT /me/providers" in error["message"]
    with httpx.stream("POST", f"{server.base}/v1/chat", json={"message": "hi"}, timeout=30) as response:
        events = read_until_idle(response)
    assert [k for k, _, _ in events][-2:] == ["error", "state"]


def test_spec_javascript_client_runs_unchanged(agent_server: Any, fake: FakeAnthropic) -> None:
    """The documentation's JavaScript client (fetch + EventSource) streams a chat and follows a session."""
    fake.script([Reply.text("Hello from the fake."),
                 Reply.tool_call("glob_search", {"pattern": "*"}), Reply.text("Nothing much here.")])
    session_id = httpx.post(f"{agent_server.base}/sessions").json()["session_id"]
    script = Path(__file__).parent / "js" / "run_spec_client.mjs"
    done = subprocess.run(["node", str(script), agent_server.base, session_id], capture_output=True, text=True,
                          timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["chatStatus"] == 200 and seen["chatText"] == "Hello from the fake."
    assert "assistant_delta" in seen["chatEvents"]
    tools = [e for e in seen["sessionEvents"] if e["kind"] == "tool"]
    assert tools and tools[0]["data"]["tool_name"] == "glob_search"


def test_spec_python_client_with_a_provider(agent_server: Any, fake: FakeAnthropic) -> None:
    """The documentation's Python wrapper, unchanged, chats and runs a tool-using session turn."""
    from spec_client import OpenAnalystClient

    fake.script([Reply.text("Hi there."), Reply.tool_call("bash", {"command": "echo 42"}), Reply.text("42.")])
    client = OpenAnalystClient(agent_server.base)
    chat_events = list(parse_sse(client.chat("Say hi", effort="low").iter_lines(decode_unicode=True)))
    assert "".join(d["text"] for k, d, _ in chat_events if k == "assistant_delta") == "Hi there."
    session = client.create_session()
    response = client.send_message(session["session_id"], "Analyze this codebase")
    events = list(parse_sse(response.iter_lines(decode_unicode=True)))
    assert next(d for k, d, _ in events if k == "tool_result")["output"] == "42\n"
    history = client.get_history(session["session_id"])
    assert [m["role"] for m in history["messages"]] == ["user", "assistant", "user", "assistant"]


def test_client_disconnect_does_not_stop_the_turn(agent_server: Any, fake: FakeAnthropic) -> None:
    """A client that drops the message stream mid-turn leaves the turn running to its end: the tool runs,
    the answer is stored, and a reconnect with Last-Event-ID replays what it missed."""
    fake.script([Reply.tool_call("bash", {"command": "sleep 1; echo done > after.txt"}), Reply.text("Finished.")])
    base = agent_server.base
    session_id = httpx.post(f"{base}/sessions", headers=ALICE).json()["session_id"]
    last_id = None
    with httpx.stream("POST", f"{base}/sessions/{session_id}/message", json={"message": "go"}, headers=ALICE,
                      timeout=60) as response:
        for kind, _, event_id in parse_sse(response.iter_lines()):
            last_id = event_id
            if kind == "tool_call":
                break  # the client goes away while the tool runs
    assert last_id is not None
    with httpx.stream("GET", f"{base}/sessions/{session_id}/events", headers={**ALICE, "Last-Event-ID": last_id},
                      timeout=60) as response:
        missed = read_until_idle(response)
    kinds = [k for k, _, _ in missed]
    assert kinds[0] == "snapshot" and "tool_result" in kinds and kinds[-1] == "state"
    assert [int(i) for _, _, i in missed[1:]] == list(range(int(last_id) + 1, int(last_id) + len(missed)))
    history = httpx.get(f"{base}/sessions/{session_id}", headers=ALICE).json()["messages"]
    assert history[-1]["content"] == [{"type": "text", "text": "Finished."}]
    assert (agent_server.data_dir / "workspaces" / "alice" / "after.txt").read_text() == "done\n"
