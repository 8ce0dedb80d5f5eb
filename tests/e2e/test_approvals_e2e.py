"""Approvals end to end: the server as a real process, a fake Anthropic server speaking the real wire format,
a policy that makes some `bash` calls wait for a person, and a real sandbox for the calls that run."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import parse_sse, read_until_idle, sandbox_workspace, server_env
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]

# The ci preset without its workspace quota, with approvals: bash commands with `rm ` or `approved` ask.
CI = Path(__file__).resolve().parents[2] / "policies" / "presets" / "ci.toml"
POLICY = "".join(line for line in CI.read_text().splitlines(keepends=True) if not line.startswith("disk_")) + """
approval_timeout_s = {timeout}
[[ask_rules]]
tool = "bash"
pattern = 'rm\\s|approved'
"""
ALICE = {"X-Tenant-ID": "alice"}
HASTY = {"X-Tenant-ID": "hasty"}  # a policy whose approvals time out after one second
MALLORY = {"X-Tenant-ID": "mallory"}
Events = list[tuple[str, dict[str, Any], str | None]]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def start(serve: Callable[..., Any], fake: FakeAnthropic, sandbox_image: str, tmp_path: Path) -> Callable[..., Any]:
    """Start (or restart, on the same data directory) a server whose tenants alice and hasty ask for approval."""
    patient, hasty = tmp_path / "patient.toml", tmp_path / "hasty.toml"
    patient.write_text(POLICY.replace("{timeout}", "120"))
    hasty.write_text(POLICY.replace("{timeout}", "1"))
    env = server_env(fake.base_url, sandbox_workspace(tmp_path / "owner-ws"),
                     OPENANALYST_TENANT_POLICIES=json.dumps({"alice": str(patient), "hasty": str(hasty)}))
    return lambda **extra: serve(env=env | extra, data_dir=tmp_path / "data")


def session(base: str, headers: dict[str, str]) -> str:
    sid: str = httpx.post(f"{base}/sessions", json={}, headers=headers).json()["session_id"]
    return sid


def until_approval(response: httpx.Response) -> tuple[Events, Iterator[tuple[str, dict[str, Any], str | None]]]:
    """Events of a message stream up to its `approval_required`, and the stream to read on."""
    events: Events = []
    stream = parse_sse(response.iter_lines())
    for kind, data, event_id in stream:
        events.append((kind, data, event_id))
        if kind == "approval_required":
            return events, stream
    raise AssertionError(f"no approval_required in {events}")


def rest_until_idle(stream: Iterator[tuple[str, dict[str, Any], str | None]]) -> Events:
    events: Events = []
    for kind, data, event_id in stream:
        events.append((kind, data, event_id))
        if kind == "state" and data.get("state") == "idle" and "parent_tool_call_id" not in data:
            return events
    raise AssertionError(f"the stream ended without idle: {events}")


def audit_of(base: str, headers: dict[str, str], session_id: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = httpx.get(f"{base}/v1/audit", params={"session_id": session_id},
                                              headers=headers).json()["data"]
    return records


def test_allowed_call_runs_and_the_decision_is_audited(start: Callable[..., Any], fake: FakeAnthropic) -> None:
    """A matching bash call pauses the session in requires_action (its stream, GET and snapshot say so);
    allowing it runs it; the audit record says who allowed
    it, when and why; a second decision is a 409 and another tenant's decision a 404."""
    server = start()
    fake.script([Reply.tool_call("bash", {"command": "echo approved > ok.txt && cat ok.txt"}),
                 Reply.text("It ran.")])
    sid = session(server.base, ALICE)
    with httpx.stream("POST", f"{server.base}/sessions/{sid}/message", json={"message": "go"}, headers=ALICE,
                      timeout=60) as response:
        before, stream = until_approval(response)
        asked = before[-1][1]
        assert ("state", {"state": "requires_action"}) in [(k, d) for k, d, _ in before]
        assert asked["tool_name"] == "bash" and "approved" in asked["arguments"]["command"]
        assert "bash.command" in asked["reason"]
        pending = httpx.get(f"{server.base}/sessions/{sid}/approvals", headers=ALICE).json()["data"]
        assert httpx.get(f"{server.base}/sessions/{sid}", headers=ALICE).json()["state"] == "requires_action"
        with httpx.stream("GET", f"{server.base}/sessions/{sid}/events", headers=ALICE, timeout=30) as snap:
            assert next(parse_sse(snap.iter_lines()))[1]["state"] == "requires_action"
        assert [(a["call_id"], a["status"]) for a in pending] == [(asked["call_id"], "pending")]
        url = f"{server.base}/sessions/{sid}/approvals/{asked['call_id']}"
        assert httpx.post(url, json={"decision": "allow"}, headers=MALLORY).status_code == 404
        decided = httpx.post(url, json={"decision": "allow", "reason": "looks safe"}, headers=ALICE)
        assert decided.status_code == 200 and decided.json()["status"] == "allowed"
        assert decided.json()["decided_by"] == "alice"
        after = rest_until_idle(stream)
    again = httpx.post(url, json={"decision": "deny"}, headers=ALICE)
    assert again.status_code == 409 and again.json()["error"]["code"] == "APPROVAL_ALREADY_DECIDED"
    missing = httpx.post(f"{server.base}/sessions/{sid}/approvals/call_nope", json={"decision": "allow"},
                         headers=ALICE)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "APPROVAL_NOT_FOUND"

    kinds = [k for k, _, _ in after]
    decision = next(d for k, d, _ in after if k == "approval_decision")
    assert decision["status"] == "allowed" and decision["reason"] == "looks safe"
    result = next(d for k, d, _ in after if k == "tool_result")
    assert result["output"] == "approved\n" and kinds[-1] == "state"
    started = next(r for r in audit_of(server.base, ALICE, sid) if r["phase"] == "started")
    assert started["decision"] == "allowed"
    assert started["reason"].startswith("allowed by alice at ") and started["reason"].endswith(": looks safe")


def test_denied_and_timed_out_calls_reach_the_model_and_never_run(start: Callable[..., Any],
                                                                   fake: FakeAnthropic) -> None:
    """A denial's reason and a timeout reach the model as error results, nothing runs, both are audited as
    denied; the direct tool API answers an always-ask call with 403 APPROVAL_REQUIRED."""
    server = start()
    fake.script([Reply.tool_call("bash", {"command": "rm -r data && echo approved > gone.txt"}),
                 Reply.text("Understood.")])
    sid = session(server.base, ALICE)
    with httpx.stream("POST", f"{server.base}/sessions/{sid}/message", json={"message": "clean"},
                      headers=ALICE, timeout=60) as response:
        before, stream = until_approval(response)
        call_id = before[-1][1]["call_id"]
        denied = httpx.post(f"{server.base}/sessions/{sid}/approvals/{call_id}", headers=ALICE,
                            json={"decision": "deny", "reason": "not on a Friday"})
        assert denied.status_code == 200 and denied.json()["status"] == "denied"
        after = rest_until_idle(stream)
    result = next(d for k, d, _ in after if k == "tool_result")
    assert result["error"]["code"] == "APPROVAL_DENIED" and "not on a Friday" in result["error"]["message"]
    to_model = fake.requests[1].json()["messages"][-1]["content"][0]
    assert to_model["is_error"] is True and "not on a Friday" in to_model["content"]
    assert not (server.data_dir / "workspaces" / "alice" / "gone.txt").exists()
    records = audit_of(server.base, ALICE, sid)
    assert [(r["phase"], r["decision"]) for r in records] == [("started", "denied"), ("finished", "denied")]
    assert records[0]["reason"].startswith("denied by alice at ")

    fake.script([Reply.tool_call("bash", {"command": "rm -f x"}), Reply.text("Timed out, fine.")])
    hasty = session(server.base, HASTY)
    with httpx.stream("POST", f"{server.base}/sessions/{hasty}/message", json={"message": "go"},
                      headers=HASTY, timeout=60) as response:
        events = read_until_idle(response)
    decision = next(d for k, d, _ in events if k == "approval_decision")
    assert decision["status"] == "timed_out" and decision["decided_by"] is None
    result = next(d for k, d, _ in events if k == "tool_result")
    assert result["error"]["code"] == "APPROVAL_TIMEOUT"
    assert "Timed out, fine." in "".join(d["text"] for k, d, _ in events if k == "assistant_delta")

    direct = httpx.post(f"{server.base}/v1/tools/bash", headers=ALICE, timeout=30,
                        json={"input": {"command": "echo approved"}, "session_id": sid})
    assert direct.status_code == 403 and direct.json()["error"]["code"] == "APPROVAL_REQUIRED"
    streamed = httpx.post(f"{server.base}/v1/tools/bash", headers=ALICE, timeout=30,
                          json={"input": {"command": "rm -rf /tmp/x"}, "stream": True})
    assert streamed.status_code == 403 and streamed.json()["error"]["code"] == "APPROVAL_REQUIRED"
    plain = httpx.post(f"{server.base}/v1/tools/bash", headers=ALICE, timeout=30,
                       json={"input": {"command": "echo fine"}})
    assert plain.status_code == 200 and plain.json()["output"] == "fine\n"


def test_interrupt_while_waiting_denies_and_ends_cleanly(start: Callable[..., Any], fake: FakeAnthropic) -> None:
    """Interrupting a session whose call waits ends the turn (INTERRUPTED, idle), stores the approval as
    interrupted, audits the call as denied, and a later decision is a 409."""
    server = start()
    fake.script([Reply.tool_call("bash", {"command": "echo approved"})])
    sid = session(server.base, ALICE)
    with httpx.stream("POST", f"{server.base}/sessions/{sid}/message", json={"message": "go"}, headers=ALICE,
                      timeout=60) as response:
        before, stream = until_approval(response)
        call_id = before[-1][1]["call_id"]
        stopped = httpx.post(f"{server.base}/sessions/{sid}/interrupt", headers=ALICE, timeout=30).json()
        assert stopped["interrupted"] is True
        after = rest_until_idle(stream)
    assert ("approval_decision", "interrupted") in [(k, d.get("status")) for k, d, _ in after]
    assert any(k == "error" and d["code"] == "INTERRUPTED" for k, d, _ in after)
    late = httpx.post(f"{server.base}/sessions/{sid}/approvals/{call_id}", json={"decision": "allow"}, headers=ALICE)
    assert late.status_code == 409
    assert [r["decision"] for r in audit_of(server.base, ALICE, sid)] == ["denied", "denied"]
    detail = httpx.get(f"{server.base}/sessions/{sid}", headers=ALICE).json()
    assert detail["state"] == "idle"
    assert detail["messages"][-1]["content"][0]["type"] == "tool_result"


def test_restart_while_waiting_leaves_no_session_in_requires_action(start: Callable[..., Any],
                                                                     fake: FakeAnthropic) -> None:
    """A server killed while a call waits comes back with the approval abandoned, the session idle with an
    error saying why, and a valid history: the next message runs a normal turn."""
    server = start()
    fake.script([Reply.tool_call("bash", {"command": "echo approved"})])
    sid = session(server.base, ALICE)
    with httpx.stream("POST", f"{server.base}/sessions/{sid}/message", json={"message": "go"}, headers=ALICE,
                      timeout=60) as response:
        before, _stream = until_approval(response)
        call_id = before[-1][1]["call_id"]
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=30)
    again = start()
    approvals = httpx.get(f"{again.base}/sessions/{sid}/approvals", headers=ALICE).json()["data"]
    assert [(a["call_id"], a["status"]) for a in approvals] == [(call_id, "abandoned")]
    with httpx.stream("GET", f"{again.base}/sessions/{sid}/events", params={"after": 0}, headers=ALICE,
                      timeout=30) as response:
        events = read_until_idle(response, stop=lambda k, d: k == "error" and d.get("code") == "SERVER_RESTARTED")
    assert events[-1][1]["code"] == "SERVER_RESTARTED"
    assert httpx.get(f"{again.base}/sessions/{sid}", headers=ALICE).json()["state"] == "idle"
    fake.script([Reply.text("Back again.")])
    with httpx.stream("POST", f"{again.base}/sessions/{sid}/message", json={"message": "still there?"},
                      headers=ALICE, timeout=60) as response:
        events = read_until_idle(response)
    assert "Back again." in "".join(d["text"] for k, d, _ in events if k == "assistant_delta")
    sent = fake.requests[-1].json()["messages"]
    assert sent[-1]["content"][0]["type"] == "tool_result" or sent[-2]["content"][0]["type"] == "tool_result"


def test_the_deciding_api_key_is_named(start: Callable[..., Any], fake: FakeAnthropic,
                                       openanalyst_cmd: list[str]) -> None:
    """With API keys required, the decision names the tenant and the id of the key that made it, in the
    answer, the event and the audit record."""
    server = start(OPENANALYST_REQUIRE_API_KEY="true")
    made = subprocess.run([*openanalyst_cmd, "--data-dir", str(server.data_dir), "keys", "create", "--tenant",
                           "alice"], capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    key_id = key.removeprefix("oak_").split("_")[0]
    auth = {"Authorization": f"Bearer {key}"}
    fake.script([Reply.tool_call("bash", {"command": "echo approved"}), Reply.text("ok")])
    sid = session(server.base, auth)
    with httpx.stream("POST", f"{server.base}/sessions/{sid}/message", json={"message": "go"}, headers=auth,
                      timeout=60) as response:
        before, stream = until_approval(response)
        decided = httpx.post(f"{server.base}/sessions/{sid}/approvals/{before[-1][1]['call_id']}", headers=auth,
                             json={"decision": "allow"}).json()
        after = rest_until_idle(stream)
    assert decided["decided_by"] == f"alice (key {key_id})"
    assert next(d for k, d, _ in after if k == "approval_decision")["decided_by"] == f"alice (key {key_id})"
    started = next(r for r in audit_of(server.base, auth, sid) if r["phase"] == "started")
    assert started["reason"].startswith(f"allowed by alice (key {key_id}) at ")


def test_two_waiting_calls_of_one_turn_are_decided_apart(start: Callable[..., Any], fake: FakeAnthropic) -> None:
    """Two calls of one model turn wait together; the session stays in requires_action until both are decided;
    the allowed one runs and the denied one does not."""
    server = start()
    fake.script([Reply.tool_calls(("bash", {"command": "echo approved-one"}),
                                  ("bash", {"command": "echo approved-two"})),
                 Reply.text("Half done.")])
    sid = session(server.base, ALICE)
    with httpx.stream("POST", f"{server.base}/sessions/{sid}/message", json={"message": "both"}, headers=ALICE,
                      timeout=60) as response:
        first, stream = until_approval(response)
        second = []
        for kind, data, event_id in stream:
            second.append((kind, data, event_id))
            if kind == "approval_required":
                break
        one, two = first[-1][1], second[-1][1]
        assert {one["arguments"]["command"], two["arguments"]["command"]} == {"echo approved-one", "echo approved-two"}
        allowed = one if one["arguments"]["command"].endswith("one") else two
        denied = two if allowed is one else one
        url = f"{server.base}/sessions/{sid}/approvals/"
        assert httpx.post(url + allowed["call_id"], json={"decision": "allow"}, headers=ALICE).status_code == 200
        assert httpx.get(f"{server.base}/sessions/{sid}", headers=ALICE).json()["state"] == "requires_action"
        assert httpx.post(url + denied["call_id"], json={"decision": "deny"}, headers=ALICE).status_code == 200
        after = rest_until_idle(stream)
    results = {d["call_id"]: d for k, d, _ in after if k == "tool_result"}
    assert results[allowed["call_id"]]["output"] == "approved-one\n"
    assert results[denied["call_id"]]["error"]["code"] == "APPROVAL_DENIED"
    states = [d["state"] for k, d, _ in second + after if k == "state"]
    assert states.count("tool_use") == 1  # only once no call waits any more
