"""Sessions and chat through the client, with a fake Anthropic upstream speaking the real wire format:
the session lifecycle, a message's turn as typed events (a tool call run in the sandbox included), a quick
chat answered whole and streamed, and a provider failure as a typed error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_support import sandbox_workspace, server_env
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply
from openanalyst_client import AsyncClient, Client, ConflictError, NotFoundError, ServerError
from openanalyst_client.events import (
    AssistantDeltaEvent,
    MessageEvent,
    StateEvent,
    ToolCallEvent,
    ToolResultEvent,
    UsageEvent,
)

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def server(serve: Callable[..., Any], sandbox_image: str, fake: FakeAnthropic, tmp_path: Path) -> Any:
    return serve(env=server_env(fake.base_url, sandbox_workspace(tmp_path / "owner-ws"),
                                OPENANALYST_PROVIDER_MAX_RETRIES="0"))


def test_session_lifecycle_and_turn(server: Any, fake: FakeAnthropic) -> None:
    """Create, list, send (a tool call then an answer, as typed events ending at idle), read back the
    stored messages, delete; a deleted session is a NotFoundError."""
    fake.script([Reply.tool_call("bash", {"command": "echo from-the-model"}), Reply.text("Done: from-the-model.")])
    with Client(server.base, tenant="erin") as oa:
        session = oa.sessions.create(title="analysis", metadata={"project": "x"})
        assert session.title == "analysis" and session.metadata == {"project": "x"}
        assert [s.session_id for s in oa.sessions.list().data] == [session.session_id]
        events = list(oa.sessions.send(session.session_id, "Run it."))
        assert isinstance(events[0], MessageEvent) and events[0].role == "user"
        call = next(e for e in events if isinstance(e, ToolCallEvent))
        result = next(e for e in events if isinstance(e, ToolResultEvent))
        assert call.tool_name == "bash" and result.call_id == call.call_id and result.output == "from-the-model\n"
        assert "".join(e.text for e in events if isinstance(e, AssistantDeltaEvent)).endswith("Done: from-the-model.")
        assert any(isinstance(e, UsageEvent) and e.input_tokens > 0 for e in events)
        last = events[-1]
        assert isinstance(last, StateEvent) and last.state == "idle"
        detail = oa.sessions.get(session.session_id)
        assert detail.state == "idle" and detail.last_seq == last.seq
        assert [m.role for m in detail.messages] == ["user", "assistant", "user", "assistant"]
        assert oa.sessions.interrupt(session.session_id).interrupted is False
        oa.sessions.delete(session.session_id)
        with pytest.raises(NotFoundError) as gone:
            oa.sessions.get(session.session_id)
        assert gone.value.code == "SESSION_NOT_FOUND"


def test_busy_session_is_a_conflict(server: Any, fake: FakeAnthropic) -> None:
    """A second message while a turn runs is a ConflictError (409) with the server's code."""
    fake.script([Reply.text("slow answer", chunk=1).with_(event_delay=0.05)])
    with Client(server.base) as oa:
        session_id = oa.sessions.create().session_id
        with oa.sessions.send(session_id, "first") as turn:
            next(turn)
            with pytest.raises(ConflictError) as busy:
                oa.sessions.send(session_id, "second").__next__()
            assert busy.value.status == 409 and busy.value.code
            assert list(turn)[-1].type == "state"


def test_chat_whole_and_streamed(server: Any, fake: FakeAnthropic) -> None:
    """`chat.create` answers a typed ChatAnswer with usage; `chat.stream` yields typed events to idle; the
    async client does the same."""
    fake.script([Reply.text("Forty-two.", usage=(30, 5)), Reply.text("Streamed answer."),
                 Reply.text("Async answer.")])
    with Client(server.base) as oa:
        answer = oa.chat.create("The answer?", system_prompt="Be brief.")
        assert answer.message == "Forty-two." and answer.tool_calls == [] and answer.error is None
        assert (answer.usage.input_tokens, answer.usage.output_tokens) == (30, 5)
        events = list(oa.chat.stream("Stream it."))
        assert "".join(e.text for e in events if isinstance(e, AssistantDeltaEvent)) == "Streamed answer."
        assert isinstance(events[-1], StateEvent) and events[-1].state == "idle"
        assert all(e.seq is None for e in events)  # a quick chat is not stored: no ids to resume from
    assert fake.requests[0].json()["system"] == "Be brief."

    async def scenario() -> str:
        async with AsyncClient(server.base) as oa:
            return (await oa.chat.create("Async?")).message

    assert asyncio.run(scenario()) == "Async answer."


def test_provider_failure_is_typed(server: Any, fake: FakeAnthropic) -> None:
    """An upstream that refuses makes the chat fail with a typed ServerError carrying the server's code."""
    fake.script([Reply.http_error(400, message="bad request upstream")])
    with Client(server.base, max_retries=0) as oa, pytest.raises(ServerError) as failed:
        oa.chat.create("Hello?")
    assert failed.value.status >= 500 and failed.value.code and failed.value.message
