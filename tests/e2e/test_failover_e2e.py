"""Failover and sub-agents as a client of the real server sees them: two fake providers (Anthropic and
OpenAI wire formats) behind `openanalyst --serve`, tools in a real sandbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import read_until_idle, sandbox_workspace, server_env
from fakes.anthropic import FakeAnthropic
from fakes.openai import FakeOpenAI
from fakes.reply import Reply

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def fakes() -> Iterator[tuple[FakeAnthropic, FakeOpenAI]]:
    with FakeAnthropic() as anthropic, FakeOpenAI() as openai:
        yield anthropic, openai


@pytest.fixture
def server(serve: Callable[..., Any], fakes: tuple[FakeAnthropic, FakeOpenAI], sandbox_image: str,
           tmp_path: Path) -> Iterator[Any]:
    anthropic, openai = fakes
    env = server_env(anthropic.base_url, sandbox_workspace(tmp_path / "owner-ws"),
                     OPENAI_API_KEY="sk-openai-test-key-000", OPENAI_BASE_URL=openai.base_url + "/v1",
                     OPENANALYST_ALLOW_MODEL_SUBSTITUTION="true")  # fails over from Claude to GPT
    data_dir = tmp_path / "data"
    started = serve(env=env, data_dir=data_dir)
    yield started
    if started.proc.poll() is None:
        assert started.stop() == 0


def chat(server: Any, message: str) -> list[tuple[str, dict[str, Any], str | None]]:
    with httpx.stream("POST", f"{server.base}/v1/chat", timeout=60,
                      json={"message": message, "model": "claude-sonnet-4-5"}) as response:
        assert response.status_code == 200
        return read_until_idle(response)


def test_overloaded_provider_fails_over_invisibly(server: Any, fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    """529s and an in-stream overload on the first provider: the second answers and the client sees one clean
    answer, no error, with usage naming the provider that served."""
    anthropic, openai = fakes
    anthropic.script([Reply.http_error(529), Reply.stream_error("overloaded"), Reply.http_error(529)])
    openai.script([Reply.text("One clean answer.")])
    events = chat(server, "hello")
    kinds = [k for k, _, _ in events]
    assert "error" not in kinds, events
    assert "".join(d["text"] for k, d, _ in events if k == "assistant_delta") == "One clean answer."
    usage = next(d for k, d, _ in events if k == "usage")
    assert usage["provider"] == "openai"
    status = {s["provider"]: s for s in httpx.get(f"{server.base}/v1/providers/status").json()["data"]}
    assert status["anthropic"]["last_error"] and status["openai"]["consecutive_failures"] == 0


def test_failure_after_first_delta_is_discarded_once(server: Any,
                                                     fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    """A provider failing mid-answer: the client is told its partial text is discarded, the next provider's
    whole answer follows, and the stored message holds it once, with nothing of the partial text."""
    anthropic, openai = fakes
    anthropic.script([Reply.stream_error("overloaded", after_text="Partial words that ")] * 3)
    openai.script([Reply.text("The complete answer.")])
    session_id = httpx.post(f"{server.base}/sessions", json={"model": "claude-sonnet-4-5"}).json()["session_id"]
    with httpx.stream("POST", f"{server.base}/sessions/{session_id}/message", json={"message": "go"},
                      timeout=60) as response:
        events = read_until_idle(response)
    discards = [d for k, d, _ in events if k == "error"]
    assert discards and all(d["code"] == "PARTIAL_RESPONSE_DISCARDED" and d["fatal"] is False for d in discards)
    after_last_discard = events[max(i for i, (k, _, _) in enumerate(events) if k == "error"):]
    assert "".join(d["text"] for k, d, _ in after_last_discard if k == "assistant_delta") == "The complete answer."
    history = httpx.get(f"{server.base}/sessions/{session_id}").json()["messages"]
    assert history[-1]["content"] == [{"type": "text", "text": "The complete answer."}]


def test_every_provider_down(server: Any, fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    """When every provider fails, the stream ends with ALL_PROVIDERS_FAILED listing what each said, and no key."""
    anthropic, openai = fakes
    anthropic.script([Reply.http_error(401)])
    openai.script([Reply.http_error(403)])
    events = chat(server, "hello")
    error = next(d for k, d, _ in events if k == "error")
    assert error["code"] == "ALL_PROVIDERS_FAILED"
    assert {p["provider"] for p in error["providers"]} == {"anthropic", "openai"}
    assert "sk-" not in str(events)
    assert events[-1][1] == {"state": "idle"}


def test_sub_agent_shares_the_sandbox_and_tags_its_events(server: Any,
                                                          fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    """The `agent` tool runs a sub-agent with its own context in the same sandbox; its events carry the
    parent tool call's id and its final text is the tool's result."""
    anthropic, _ = fakes
    anthropic.script([
        Reply.tool_call("agent", {"description": "probe", "prompt": "write a marker file"}, id="toolu_parent"),
        Reply.tool_call("bash", {"command": "echo from-sub > marker && cat marker"}, id="toolu_child"),
        Reply.text("sub-agent done"),
        Reply.text("parent done"),
    ])
    events = chat(server, "delegate it")
    child_call = next(d for k, d, _ in events if k == "tool_call" and d["tool_name"] == "bash")
    assert child_call["parent_tool_call_id"] == "toolu_parent"
    agent_result = next(d for k, d, _ in events if k == "tool_result" and d["tool_name"] == "agent")
    assert agent_result["output"] == "sub-agent done"
    assert "parent_tool_call_id" not in agent_result
    final = [d["text"] for k, d, _ in events if k == "assistant_delta" and "parent_tool_call_id" not in d]
    assert "".join(final) == "parent done"
    # The sub-agent's first request carried only its own task, not the parent's conversation.
    sub_request = anthropic.requests[1].json()
    assert sub_request["messages"] == [{"role": "user", "content": [{"type": "text", "text": "write a marker file"}]}]
    read = httpx.post(f"{server.base}/v1/tools/read_file", json={"input": {"path": "marker"}}, timeout=30).json()
    assert "from-sub" in read["output"]
