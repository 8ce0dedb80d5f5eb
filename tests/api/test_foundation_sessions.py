"""Sessions through the ASGI app: create, paginated list, history, delete, the message SSE and turns."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from server.app import build_app
from server.contract.events import AssistantDeltaEvent, StateEvent
from server.services import Services
from server.settings import Settings
from server.tenancy import Tenant

pytestmark = pytest.mark.anyio


def events_of(resp: httpx.Response) -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for block in resp.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            import json

            out.append((fields["event"], int(fields["id"]), json.loads(fields["data"])))
    return out


async def test_create_session(client: httpx.AsyncClient) -> None:
    """POST /sessions with or without a body is 201 with an unguessable sess_ id and created_at."""
    empty = await client.post("/sessions")
    assert empty.status_code == 201
    assert re.fullmatch(r"sess_[A-Za-z0-9_-]{24}", empty.json()["session_id"])
    assert empty.json()["created_at"].endswith("Z")
    full = await client.post("/sessions", json={"title": "t", "model": "claude-sonnet-4-5",
                                                "system_prompt": "be brief", "metadata": {"k": [1, 2]}})
    body = full.json()
    assert (body["title"], body["model"], body["system_prompt"], body["metadata"]) == (
        "t", "claude-sonnet-4-5", "be brief", {"k": [1, 2]})
    assert body["session_id"] != empty.json()["session_id"]


async def test_pagination(client: httpx.AsyncClient) -> None:
    """GET /sessions pages with page/per_page and reports total and total_pages."""
    ids = [(await client.post("/sessions", json={"title": str(i)})).json()["session_id"] for i in range(5)]
    first = (await client.get("/sessions", params={"per_page": 2})).json()
    assert first["meta"] == {"page": 1, "per_page": 2, "total": 5, "total_pages": 3}
    seen = [s["session_id"] for p in (1, 2, 3)
            for s in (await client.get("/sessions", params={"page": p, "per_page": 2})).json()["data"]]
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert seen[0] == ids[-1]  # newest first
    beyond = (await client.get("/sessions", params={"page": 9, "per_page": 2})).json()
    assert beyond["data"] == [] and beyond["meta"]["total"] == 5
    for bad in [{"page": 0}, {"per_page": 0}, {"per_page": 101}, {"page": "x"}]:
        resp = await client.get("/sessions", params=bad)
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_message_stream_and_history(client: httpx.AsyncClient) -> None:
    """A message is stored, streamed back as message → thinking → NO_PROVIDER error → idle, and kept in history."""
    sid = (await client.post("/sessions")).json()["session_id"]
    resp = await client.post(f"/sessions/{sid}/message", json={"message": "hello there"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    evs = events_of(resp)
    assert [(t, s) for t, s, _d in evs] == [("message", 1), ("state", 2), ("error", 3), ("state", 4)]
    assert evs[0][2]["content"] == [{"type": "text", "text": "hello there"}] and evs[0][2]["role"] == "user"
    assert evs[1][2] == {"state": "thinking"}
    assert evs[2][2]["code"] == "NO_PROVIDER_CONFIGURED" and "PUT /me/providers" in evs[2][2]["message"]
    assert evs[3][2] == {"state": "idle"}
    detail = (await client.get(f"/sessions/{sid}")).json()
    assert detail["state"] == "idle" and detail["last_seq"] == 4
    assert [(m["role"], m["content"]) for m in detail["messages"]] == [
        ("user", [{"type": "text", "text": "hello there"}])]
    assert detail["messages"][0]["created_at"].endswith("Z")
    second = await client.post(f"/sessions/{sid}/message", json={"message": "again"})
    assert [s for _t, s, _d in events_of(second)] == [5, 6, 7, 8]


async def test_message_validation(client: httpx.AsyncClient) -> None:
    """Empty, blank, missing or extra-field messages are 422; a missing session is 404."""
    sid = (await client.post("/sessions")).json()["session_id"]
    for body in [{}, {"message": ""}, {"message": "  \n"}, {"message": "x", "model": "m"}, {"message": 3}]:
        resp = await client.post(f"/sessions/{sid}/message", json=body)
        assert resp.status_code == 422, body
    resp = await client.post("/sessions/sess_nope/message", json={"message": "x"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "SESSION_NOT_FOUND"


class BlockingRunner:
    """A turn that waits for the test to release it, then answers with deltas."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def start_turn(self, tenant: Tenant, session_id: str, user_text: str) -> None:
        events = self.services.events
        events.append(tenant.id, session_id, StateEvent(state="thinking"))
        self.started.set()
        await self.release.wait()
        for word in user_text.split():
            events.append(tenant.id, session_id, AssistantDeltaEvent(text=word))
        await self.services.sessions.append_message(tenant.id, session_id, "assistant",
                                                    [{"type": "text", "text": user_text.upper()}])
        events.append(tenant.id, session_id, StateEvent(state="idle"))

BlockingApp = tuple[FastAPI, list[BlockingRunner]]


@pytest.fixture
def blocking_app(make_settings: Callable[..., Settings]) -> BlockingApp:
    """An app whose turns block until released, and the runners it made (one per app start)."""
    runners: list[BlockingRunner] = []

    def factory(services: Services) -> BlockingRunner:
        runners.append(BlockingRunner(services))
        return runners[-1]

    return build_app(make_settings(), turn_runner=factory), runners


async def test_busy_and_background_turn(blocking_app: BlockingApp, run_app: Any) -> None:
    """A second message during a turn is 409 SESSION_BUSY; the turn runs on even if its client left."""
    app, runners = blocking_app
    async with run_app(app) as client:
        sid = (await client.post("/sessions")).json()["session_id"]
        first = asyncio.create_task(client.post(f"/sessions/{sid}/message", json={"message": "one two"}))
        async with asyncio.timeout(5):
            await runners[0].started.wait()
        busy = await client.post(f"/sessions/{sid}/message", json={"message": "again"})
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "SESSION_BUSY"
        assert (await client.get(f"/sessions/{sid}")).json()["state"] == "running"
        runners[0].release.set()
        resp = await first
        assert [t for t, _s, _d in events_of(resp)] == ["message", "state", "assistant_delta",
                                                         "assistant_delta", "state"]
        detail = (await client.get(f"/sessions/{sid}")).json()
        assert detail["state"] == "idle"
        assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
        ok = await client.post(f"/sessions/{sid}/message", json={"message": "three"})
        assert ok.status_code == 200


class FailingRunner:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def start_turn(self, tenant: Tenant, session_id: str, user_text: str) -> None:
        self.services.events.append(tenant.id, session_id, StateEvent(state="thinking"))
        raise RuntimeError("boom")


async def test_failing_runner_still_ends_idle(make_settings: Callable[..., Settings], run_app: Any) -> None:
    """A turn that raises ends with an INTERNAL_ERROR event and idle, and frees the session."""
    async with run_app(build_app(make_settings(), turn_runner=FailingRunner)) as client:
        sid = (await client.post("/sessions")).json()["session_id"]
        for _ in range(2):
            resp = await client.post(f"/sessions/{sid}/message", json={"message": "x"})
            evs = events_of(resp)
            assert [t for t, _s, _d in evs] == ["message", "state", "error", "state"]
            assert evs[2][2]["code"] == "INTERNAL_ERROR" and "boom" not in resp.text


async def test_delete_session(client: httpx.AsyncClient, services: Services) -> None:
    """DELETE is 204 and removes the session, its messages and its events; then it is 404 everywhere."""
    sid = (await client.post("/sessions")).json()["session_id"]
    await client.post(f"/sessions/{sid}/message", json={"message": "to be deleted"})
    assert (await client.delete(f"/sessions/{sid}")).status_code == 204
    for method, path in [("GET", f"/sessions/{sid}"), ("DELETE", f"/sessions/{sid}"),
                         ("GET", f"/sessions/{sid}/events")]:
        assert (await client.request(method, path)).status_code == 404
    for table in ("messages", "events", "sessions"):
        column = "id" if table == "sessions" else "session_id"
        assert (await services.db.read(f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", (sid,)))[0][0] == 0
    assert (await client.get("/sessions")).json()["meta"]["total"] == 0


async def test_restart_keeps_sessions(make_settings: Callable[..., Settings], run_app: Any) -> None:
    """Sessions, messages and events survive a restart; seq numbers continue."""
    settings = make_settings()
    async with run_app(build_app(settings)) as client:
        sid = (await client.post("/sessions", json={"title": "keep"})).json()["session_id"]
        await client.post(f"/sessions/{sid}/message", json={"message": "remember me"})
    async with run_app(build_app(settings)) as client:
        detail = (await client.get(f"/sessions/{sid}")).json()
        assert detail["title"] == "keep" and detail["last_seq"] == 4
        assert detail["messages"][0]["content"][0]["text"] == "remember me"
        resp = await client.post(f"/sessions/{sid}/message", json={"message": "more"})
        assert [s for _t, s, _d in events_of(resp)] == [5, 6, 7, 8]


async def test_delete_during_turn(blocking_app: BlockingApp, run_app: Any) -> None:
    """Deleting a session mid-turn stops the turn, ends its message stream and leaves no rows behind;
    a late append to the deleted session is refused."""
    app, runners = blocking_app
    async with run_app(app) as client:
        services: Services = app.state.services
        sid = (await client.post("/sessions")).json()["session_id"]
        pending = asyncio.create_task(client.post(f"/sessions/{sid}/message", json={"message": "x"}))
        async with asyncio.timeout(5):
            await runners[0].started.wait()
        assert (await client.delete(f"/sessions/{sid}")).status_code == 204
        resp = await pending
        assert events_of_any(resp)[-1] == ("error", "SESSION_DELETED")
        assert not services.turns.busy(sid)
        with pytest.raises(Exception, match="deleted"):
            services.events.append("owner", sid, StateEvent(state="idle"))
        await services.db.flush()
        assert (await services.db.read("SELECT COUNT(*) FROM events WHERE session_id = ?", (sid,)))[0][0] == 0


def events_of_any(resp: httpx.Response) -> list[tuple[str, str | None]]:
    import json

    out = []
    for block in resp.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            out.append((fields["event"], json.loads(fields["data"]).get("code")))
    return out


async def test_cancel_ends_turn_with_idle(blocking_app: BlockingApp, run_app: Any) -> None:
    """Cancelling a running turn (interrupt) ends it with TURN_CANCELLED and idle exactly once, and the
    session takes the next message."""
    app, runners = blocking_app
    async with run_app(app) as client:
        services: Services = app.state.services
        sid = (await client.post("/sessions")).json()["session_id"]
        pending = asyncio.create_task(client.post(f"/sessions/{sid}/message", json={"message": "x"}))
        async with asyncio.timeout(5):
            await runners[0].started.wait()
        assert await services.turns.cancel(sid) is True
        assert await services.turns.cancel(sid) is False
        resp = await pending
        assert events_of_any(resp) == [("message", None), ("state", None), ("error", "TURN_CANCELLED"),
                                       ("state", None)]
        assert not services.turns.busy(sid)
        runners[0].release.set()
        assert (await client.post(f"/sessions/{sid}/message", json={"message": "y"})).status_code == 200


async def test_turn_survives_client_disconnect(blocking_app: BlockingApp, run_app: Any,
                                              asgi_stream: Any) -> None:
    """A client that drops the message response does not stop the turn: it finishes and is stored."""
    app, runners = blocking_app
    async with run_app(app) as client:
        services: Services = app.state.services
        sid = (await client.post("/sessions")).json()["session_id"]
        stream = asgi_stream(app, "POST", f"/sessions/{sid}/message", {"content-type": "application/json"},
                             b'{"message": "keep going"}')
        stream.start()
        assert [e["event"] for e in await stream.read_events(2)] == ["message", "state"]
        await stream.disconnect()
        assert services.events.subscriber_count(sid) == 0 and services.turns.busy(sid)
        runners[0].release.set()
        async with asyncio.timeout(5):
            while services.turns.busy(sid):
                await asyncio.sleep(0.01)
        detail = (await client.get(f"/sessions/{sid}")).json()
        assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
        assert detail["messages"][1]["content"][0]["text"] == "KEEP GOING"
