"""Live event streams: snapshot, replay with Last-Event-ID/?after, no gap/no duplicate under concurrent
appends, keep-alives, slow-subscriber overflow, many subscribers, and release on disconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from server.app import build_app
from server.contract.events import AssistantDeltaEvent, StateEvent, UsageEvent
from server.services import Services
from server.sessions.events import REPLAY_PAGE
from server.settings import Settings

pytestmark = pytest.mark.anyio


async def new_session(client: httpx.AsyncClient) -> str:
    sid: str = (await client.post("/sessions")).json()["session_id"]
    return sid


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_snapshot_then_live(client: httpx.AsyncClient, services: Services, open_stream: Any) -> None:
    """A subscriber first gets a snapshot (state, last seq), then events appended while it listens."""
    sid = await new_session(client)
    services.events.append("owner", sid, StateEvent(state="thinking"))
    stream = open_stream(f"/sessions/{sid}/events")
    [snap] = await stream.read_events(1)
    assert stream.status == 200 and stream.response_headers["content-type"].startswith("text/event-stream")
    assert snap["event"] == "snapshot" and "id" not in snap
    assert snap["data"]["last_seq"] == 1 and snap["data"]["state"] == "idle" and snap["data"]["session_id"] == sid
    await wait_for(lambda: services.events.subscriber_count(sid) == 1)
    services.events.append("owner", sid, AssistantDeltaEvent(text="hi"))
    services.events.append("owner", sid, UsageEvent(input_tokens=1, output_tokens=2, cost_usd=0.0,
                                                  provider="p", model="m", latency_ms=1.5))
    got = await stream.read_events(2)
    assert [(e["event"], e["id"], e["data"]) for e in got] == [
        ("assistant_delta", 2, {"text": "hi"}),
        ("usage", 3, {"input_tokens": 1, "output_tokens": 2, "cost_usd": 0.0, "provider": "p", "model": "m",
                       "latency_ms": 1.5})]


async def test_replay_after_last_event_id(client: httpx.AsyncClient, services: Services,
                                          open_stream: Any) -> None:
    """Last-Event-ID (or ?after=N; the header wins) replays what came after, then live, exactly once."""
    sid = await new_session(client)
    for i in range(5):
        services.events.append("owner", sid, AssistantDeltaEvent(text=str(i)))
    by_header = open_stream(f"/sessions/{sid}/events?after=0", headers={"Last-Event-ID": "2"})
    by_query = open_stream(f"/sessions/{sid}/events?after=4")
    everything = open_stream(f"/sessions/{sid}/events?after=0")
    assert [e["id"] for e in (await by_header.read_events(4))[1:]] == [3, 4, 5]
    assert [e["id"] for e in (await by_query.read_events(2))[1:]] == [5]
    assert [e["id"] for e in (await everything.read_events(6))[1:]] == [1, 2, 3, 4, 5]
    await wait_for(lambda: services.events.subscriber_count(sid) == 3)
    services.events.append("owner", sid, StateEvent(state="idle"))
    for stream in (by_header, by_query, everything):
        assert [e["id"] for e in await stream.read_events(1)] == [6]


async def test_bad_last_event_id(client: httpx.AsyncClient) -> None:
    """A non-numeric or negative Last-Event-ID or after is a clear 400/422."""
    sid = await new_session(client)
    resp = await client.get(f"/sessions/{sid}/events", headers={"Last-Event-ID": "abc"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "INVALID_LAST_EVENT_ID"
    resp = await client.get(f"/sessions/{sid}/events", headers={"Last-Event-ID": "-3"})
    assert resp.status_code == 400
    resp = await client.get(f"/sessions/{sid}/events", params={"after": -1})
    assert resp.status_code == 422


async def test_keepalive_comments(client: httpx.AsyncClient, open_stream: Any) -> None:
    """An idle stream gets keep-alive comment lines (interval configurable; 0.2 s here)."""
    sid = await new_session(client)
    stream = open_stream(f"/sessions/{sid}/events")
    got = await stream.read_events(3, include_comments=True, timeout=5)
    assert got[0]["event"] == "snapshot" and got[1] == {"comment": "keep-alive"} == got[2]


async def test_disconnect_releases(client: httpx.AsyncClient, services: Services, open_stream: Any) -> None:
    """A client that disconnects is unsubscribed at once, without waiting for an event or keep-alive."""
    sid = await new_session(client)
    streams = [open_stream(f"/sessions/{sid}/events") for _ in range(5)]
    for s in streams:
        await s.read_events(1)
    await wait_for(lambda: services.events.subscriber_count(sid) == 5)
    for s in streams:
        await s.disconnect()
    assert services.events.subscriber_count() == 0


async def test_many_subscribers_in_order(client: httpx.AsyncClient, services: Services,
                                         open_stream: Any) -> None:
    """Fifty subscribers each receive every event, in order."""
    sid = await new_session(client)
    streams = [open_stream(f"/sessions/{sid}/events") for _ in range(50)]
    for s in streams:
        await s.read_events(1)
    await wait_for(lambda: services.events.subscriber_count(sid) == 50)
    for i in range(30):
        services.events.append("owner", sid, AssistantDeltaEvent(text=str(i)))
    for s in streams:
        assert [e["data"]["text"] for e in await s.read_events(30)] == [str(i) for i in range(30)]


async def test_no_gap_no_duplicate_under_concurrent_appends(client: httpx.AsyncClient,
                                                            services: Services) -> None:
    """Subscribers joining at random moments of a fast append burst (rows still uncommitted) each get
    exactly the events after their starting point, contiguous."""
    sid = await new_session(client)
    total = 3000
    subs = []

    async def writer() -> None:
        for i in range(total):
            services.events.append("owner", sid, AssistantDeltaEvent(text=str(i)))
            if i % 97 == 0:
                await asyncio.sleep(0)

    async def joiner() -> None:
        for k in range(15):
            after = max(0, await services.events.last_seq(sid) - (k * 37) % 200)
            subs.append((after, await services.events.subscribe("owner", sid, after)))
            await asyncio.sleep(0)

    await asyncio.gather(writer(), joiner())

    async def collect(after: int, sub: Any) -> None:
        seqs: list[int] = []
        async with asyncio.timeout(20):
            while len(seqs) < total - after:
                batch = await sub.batch(5)
                assert batch is not None
                seqs += [e.seq for e in batch]
        sub.close()
        assert seqs == list(range(after + 1, total + 1))

    await asyncio.gather(*(collect(a, s) for a, s in subs))


async def test_long_replay_pages(client: httpx.AsyncClient, services: Services) -> None:
    """A replay longer than one page comes back whole and in order after the rows are committed."""
    sid = await new_session(client)
    n = REPLAY_PAGE * 2 + 17
    for i in range(n):
        services.events.append("owner", sid, AssistantDeltaEvent(text=str(i)))
    await services.db.flush()
    sub = await services.events.subscribe("owner", sid, 0)
    got: list[int] = []
    while len(got) < n:
        batch = await sub.batch(1)
        assert batch
        got += [e.seq for e in batch if e.seq is not None]
    sub.close()
    assert got == list(range(1, n + 1))


async def test_slow_subscriber_dropped(make_settings: Callable[..., Settings], run_app: Any) -> None:
    """A subscriber that falls behind its bounded queue gets SUBSCRIBER_TOO_SLOW naming its last event
    and is dropped; the writer and a fast subscriber go on, and a reconnect resumes with no gap."""
    app = build_app(make_settings(sse_queue_events=8))
    async with run_app(app) as client:
        services: Services = app.state.services
        sid = await new_session(client)
        slow = await services.events.subscribe("owner", sid)
        fast = await services.events.subscribe("owner", sid)
        fast_seen: list[int] = []
        for i in range(40):
            services.events.append("owner", sid, AssistantDeltaEvent(text=str(i)))
            fast_seen += [e.seq for e in (await fast.batch(0)) or [] if e.seq is not None]
        assert fast_seen == list(range(1, 41))
        batch = await slow.batch(1)
        assert batch is not None
        assert [e.seq for e in batch[:-1]] == list(range(1, 9))
        err = batch[-1]
        assert err.type == "error" and err.data["code"] == "SUBSCRIBER_TOO_SLOW"
        assert err.data["last_event_id"] == 8 and "Last-Event-ID" in err.data["message"]
        assert await slow.batch(0) is None and services.events.subscriber_count(sid) == 1
        again = await services.events.subscribe("owner", sid, err.data["last_event_id"])
        rest: list[int] = []
        while len(rest) < 32:
            rest += [e.seq for e in (await again.batch(1)) or [] if e.seq is not None]
        assert rest == list(range(9, 41))
        again.close()
        fast.close()


async def test_deleted_session_ends_stream(client: httpx.AsyncClient, services: Services,
                                           open_stream: Any) -> None:
    """Deleting a session ends its live streams with a SESSION_DELETED error."""
    sid = await new_session(client)
    stream = open_stream(f"/sessions/{sid}/events")
    await stream.read_events(1)
    await wait_for(lambda: services.events.subscriber_count(sid) == 1)
    assert (await client.delete(f"/sessions/{sid}")).status_code == 204
    [err] = await stream.read_events(1)
    assert err["event"] == "error" and err["data"]["code"] == "SESSION_DELETED"
    assert await stream.read_events(1, timeout=2) == [] and stream.finished


async def test_message_events_reach_followers(client: httpx.AsyncClient, services: Services,
                                              open_stream: Any) -> None:
    """A follower on /events sees the message, thinking, error and idle events a message produces."""
    sid = await new_session(client)
    stream = open_stream(f"/sessions/{sid}/events")
    await stream.read_events(1)
    await wait_for(lambda: services.events.subscriber_count(sid) == 1)
    await client.post(f"/sessions/{sid}/message", json={"message": "hi"})
    got = await stream.read_events(4)
    assert [(e["event"], e["id"]) for e in got] == [("message", 1), ("state", 2), ("error", 3), ("state", 4)]


async def test_test_hook_off_by_default(client: httpx.AsyncClient, make_settings: Callable[..., Settings],
                                        run_app: Any) -> None:
    """The bench's event-append hook is a plain 404 unless enable_test_hooks is set."""
    sid = await new_session(client)
    resp = await client.post(f"/_test/sessions/{sid}/events", json={"type": "usage", "data": {}})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "NOT_FOUND"
    app = build_app(make_settings(enable_test_hooks=True, data_dir=make_settings().data_dir.parent / "hook"))
    async with run_app(app) as hooked:
        sid = await new_session(hooked)
        resp = await hooked.post(f"/_test/sessions/{sid}/events", json={"type": "usage", "data": {"x": 1}})
        assert resp.json() == {"seq": 1}
        other = await hooked.post(f"/_test/sessions/{sid}/events", json={"type": "usage"},
                                  headers={"X-Tenant-ID": "b"})
        assert other.status_code == 404
