"""Session streams survive a dropped connection: the client reconnects with Last-Event-ID and the iterator
goes on without a gap or a duplicate — for a session's event stream and for a message's turn stream. The
connection is cut by a loopback TCP proxy between client and server; the server itself keeps running."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_support import sandbox_workspace, server_env
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply
from openanalyst_client import AsyncClient, Client, StreamInterrupted
from openanalyst_client.events import AssistantDeltaEvent, SnapshotEvent, StateEvent
from tcp_proxy import TcpProxy

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def server(serve: Callable[..., Any], sandbox_image: str, fake: FakeAnthropic, tmp_path: Path) -> Any:
    return serve(env=server_env(fake.base_url, sandbox_workspace(tmp_path / "owner-ws"),
                                OPENANALYST_PROVIDER_MAX_RETRIES="0"))


@pytest.fixture
def proxy(server: Any) -> Iterator[TcpProxy]:
    with TcpProxy(server.port) as relay:
        yield relay


def test_session_events_resume_after_cuts(server: Any, proxy: TcpProxy) -> None:
    """Events made while the connection is down are replayed after it, cuts during a blocked read are
    recovered, and the seqs seen are exactly 1..N once each."""
    direct = Client(server.base, tenant="carol")
    via = Client(proxy.url, tenant="carol", timeout=30)
    session_id = direct.sessions.create(title="resume").session_id
    stream = via.sessions.events(session_id)
    seen: list[int] = []
    first = next(stream)
    assert isinstance(first, SnapshotEvent) and first.last_seq == 0

    def call(n: int) -> None:
        answer = direct.tools.call("bash", {"command": f"echo {n}"}, session_id=session_id)
        assert answer.output == f"{n}\n"

    def take(upto: int) -> None:
        for event in stream:
            assert not isinstance(event, SnapshotEvent), "a reconnect's snapshot is not repeated"
            assert event.seq is not None
            seen.append(event.seq)
            if event.seq >= upto:
                return

    call(1)
    take(2)  # tool_call, tool_result
    assert proxy.cut() == 1
    call(2)  # made while the client is disconnected: replayed after the reconnect
    call(3)
    take(6)
    assert stream.reconnects == 1

    def calls_and_cuts() -> None:  # cut while the client is blocked reading the live stream
        for n in (4, 5, 6):
            call(n)
            proxy.cut()

    worker = threading.Thread(target=calls_and_cuts)
    worker.start()
    take(12)
    worker.join(30)
    stream.close()
    assert seen == list(range(1, 13))
    assert stream.reconnects >= 2 and proxy.connections == stream.reconnects + 1
    direct.close()
    via.close()


def test_message_stream_resumes_mid_turn(server: Any, proxy: TcpProxy, fake: FakeAnthropic) -> None:
    """A turn's stream cut after its first delta goes on from the session's events: every delta once, in
    order, then the turn's final idle, and nothing after it."""
    text = "The quick brown fox jumps over the lazy dog, twice."
    fake.script([dataclasses.replace(Reply.text(text, chunk=4), event_delay=0.05)])
    via = Client(proxy.url, timeout=30)
    session_id = via.sessions.create().session_id
    events = []
    with via.sessions.send(session_id, "Say the pangram.") as stream:
        for event in stream:
            events.append(event)
            if isinstance(event, AssistantDeltaEvent) and len(events) < 10 and proxy.cuts == 0:
                proxy.cut()
        assert stream.reconnects == 1
    assert "".join(e.text for e in events if isinstance(e, AssistantDeltaEvent)) == text
    seqs = [e.seq for e in events]
    assert all(s is not None for s in seqs), [(e.type, e.seq) for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # type: ignore[operator]
    last = events[-1]
    assert isinstance(last, StateEvent) and last.state == "idle" and last.parent_tool_call_id is None
    assert events[0].type == "message" and not any(isinstance(e, SnapshotEvent) for e in events)
    assert via.sessions.get(session_id).messages[-1].content[0].text == text  # type: ignore[union-attr]
    via.close()


def test_tool_stream_cut_is_reported(server: Any, proxy: TcpProxy) -> None:
    """A tool call's stream has no event ids to resume from: a cut raises StreamInterrupted, saying how many
    events had arrived, instead of ending quietly as if the call had finished."""
    via = Client(proxy.url, timeout=30)
    stream = via.tools.stream("bash", {"command": "echo started; sleep 5; echo late"})
    first = next(stream)
    assert first.type == "tool_output"
    proxy.cut()
    with pytest.raises(StreamInterrupted) as cut:
        list(stream)
    assert cut.value.events == 1
    via.close()


def test_async_session_events_resume(server: Any, proxy: TcpProxy) -> None:
    """The async iterator resumes the same way: events made while cut off arrive once, in order."""
    direct = Client(server.base)
    session_id = direct.sessions.create().session_id

    async def scenario() -> list[int]:
        seen: list[int] = []
        async with AsyncClient(proxy.url, timeout=30) as via, via.sessions.events(session_id, after=0) as stream:
            assert isinstance(await stream.__anext__(), SnapshotEvent)
            for n in range(3):
                await asyncio.to_thread(direct.tools.call, "bash", {"command": f"echo {n}"}, session_id=session_id)
                if n == 1:
                    proxy.cut()
            async for event in stream:
                assert event.seq is not None
                seen.append(event.seq)
                if event.seq == 6:
                    break
            assert stream.reconnects == 1
        return seen

    assert asyncio.run(scenario()) == [1, 2, 3, 4, 5, 6]
    direct.close()
