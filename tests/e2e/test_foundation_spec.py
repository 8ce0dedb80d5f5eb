"""The spec's own examples against a real ``openanalyst --serve``: its curl lines run with real curl, and its
Python wrapper class, copied verbatim, works as written."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from spec_client import OpenAnalystClient

pytestmark = pytest.mark.e2e

# The spec's curl lines, verbatim (the session id and port are substituted when run).
CURL_HEALTH = "curl http://localhost:3080/health"
CURL_ME = "curl http://localhost:3080/me"
CURL_SESSIONS = "curl http://localhost:3080/sessions"
CURL_ALPHA = 'curl -H "X-Tenant-ID: team-alpha" http://localhost:3080/sessions'
CURL_BETA = 'curl -H "X-Tenant-ID: team-beta" http://localhost:3080/sessions'
CURL_CREATE = """curl -X POST http://localhost:3080/sessions \\
-H "Content-Type: application/json\""""
CURL_MESSAGE = """curl -X POST http://localhost:3080/sessions/sess_abc123/message \\
-H "Content-Type: application/json" \\
-d '{"message": "Read the main.rs file and explain the architecture"}'"""
CURL_EVENTS = "curl -N http://localhost:3080/sessions/sess_abc123/events"
CURL_HISTORY = "curl http://localhost:3080/sessions/sess_abc123"
CURL_CONTINUE = """curl -X POST http://localhost:3080/sessions/sess_abc123/message \\
-H "Content-Type: application/json" \\
-d '{"message": "Now refactor that module to use async/await"}'"""
CURL_PUT_PROVIDER = """curl -X PUT http://localhost:3080/me/providers/anthropic \\
-H "Content-Type: application/json" \\
-d '{"api_key": "sk-ant-api03-..."}'"""
CURL_PROVIDERS = "curl http://localhost:3080/me/providers"
CURL_AUTH_STATUS = "curl http://localhost:3080/me/auth/status"


def curl(command: str, server: Any, session_id: str = "sess_abc123", max_time: float = 20) -> str:
    """Run one spec curl line in a real shell, as a user pastes it (against this server and session)."""
    line = command.replace("http://localhost:3080", server.base).replace("sess_abc123", session_id)
    assert line.startswith("curl ")
    line = f"curl -sS --max-time {max_time} " + line[len("curl "):]
    done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=max_time + 10)
    assert done.returncode in (0, 28), done.stderr  # 28: --max-time reached (the long-lived stream)
    return done.stdout


def sse(text: str) -> list[tuple[str, dict[str, object]]]:
    out = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def assert_no_provider_turn(events: list[tuple[str, dict[str, object]]]) -> None:
    """A turn without a provider: the user message, any state changes, NO_PROVIDER_CONFIGURED, then idle."""
    assert events[0][0] == "message"
    assert events[-2][0] == "error" and events[-2][1]["code"] == "NO_PROVIDER_CONFIGURED"
    assert events[-1] == ("state", {"state": "idle"})
    assert all(t == "state" for t, _d in events[1:-2])


@pytest.mark.timeout(90)
def test_spec_curl_examples(serve: Callable[..., Any]) -> None:
    """Every curl example of the spec works against the server as written."""
    server = serve()
    assert json.loads(curl(CURL_HEALTH, server))["status"] == "ok"
    assert json.loads(curl(CURL_ME, server))["role"] == "owner"
    created = json.loads(curl(CURL_CREATE, server))
    sid = created["session_id"]
    assert sid.startswith("sess_") and created["created_at"]
    assert [s["session_id"] for s in json.loads(curl(CURL_SESSIONS, server))["data"]] == [sid]
    assert json.loads(curl(CURL_ALPHA, server))["data"] == json.loads(curl(CURL_BETA, server))["data"] == []
    streamed = sse(curl(CURL_MESSAGE, server, sid))
    assert_no_provider_turn(streamed)
    follow = sse(curl(CURL_EVENTS, server, sid, max_time=1.5))
    assert follow[0][0] == "snapshot" and follow[0][1]["last_seq"] == len(streamed)
    history = json.loads(curl(CURL_HISTORY, server, sid))
    assert history["messages"][0]["content"][0]["text"] == "Read the main.rs file and explain the architecture"
    assert_no_provider_turn(sse(curl(CURL_CONTINUE, server, sid)))
    assert len(json.loads(curl(CURL_HISTORY, server, sid))["messages"]) == 2
    put = json.loads(curl(CURL_PUT_PROVIDER, server))
    assert put["name"] == "anthropic" and put["api_key"] == "****-..."  # the last 4 only
    listed = json.loads(curl(CURL_PROVIDERS, server))["data"]
    assert [(p["name"], p["source"]) for p in listed] == [("anthropic", "api")]
    status = json.loads(curl(CURL_AUTH_STATUS, server))
    assert status["signed_in"] is False and status["email"] is None and status["balance"] is None
    assert status["manual_key_present"] is False


@pytest.mark.timeout(60)
def test_spec_python_wrapper(serve: Callable[..., Any]) -> None:
    """The spec's Python wrapper creates a session, streams a message and reads the history."""
    server = serve()
    # Usage (the spec's three lines, with this server's address)
    client = OpenAnalystClient(server.base)
    session = client.create_session()
    response = client.send_message(session["session_id"], "Analyze this codebase")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.iter_lines(decode_unicode=True) if line.startswith("event: ")]
    assert events[0] == "event: message" and events[-2:] == ["event: error", "event: state"]
    history = client.get_history(session["session_id"])
    assert history["session_id"] == session["session_id"]
    assert history["messages"][0]["content"] == [{"type": "text", "text": "Analyze this codebase"}]
