"""The /v1/audit routes over real HTTP on 127.0.0.1: filters, pagination, streamed export, verify, tenancy."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from server.api.audit import router
from server.audit.cli import verify_file
from server.audit.log import AuditLog
from server.audit.verify import verify_lines
from server.errors import install_handlers
from server.tenancy import OWNER, current_tenant, parse_tenant_id

RESULT = {"output": "done", "exit_code": 0, "timed_out": False, "truncated": False, "duration_ms": 4.0,
          "limit": None, "error": None}


async def tenant_from_header(request: Request) -> Any:
    """The header rule of server.tenancy without the rest of the services (keys, settings)."""
    header = request.headers.get("x-tenant-id")
    return OWNER if header is None else parse_tenant_id(header)


class Server:
    """The router on a tiny app, served by uvicorn in a thread; the AuditLog runs on that server's loop."""

    def __init__(self, data_dir: Path) -> None:
        self.audit = AuditLog(data_dir / "audit.db")
        self.app = app = FastAPI(lifespan=self._lifespan)
        install_handlers(app)
        app.include_router(router)
        app.dependency_overrides[current_tenant] = tenant_from_header
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    async def _lifespan(self, app: FastAPI) -> Any:
        await self.audit.open()
        self.loop = asyncio.get_running_loop()
        app.state.services = SimpleNamespace(audit=self.audit)
        yield
        await self.audit.close()

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            assert self.thread.is_alive(), "server thread died"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def call(self, tenant: str, n: int, *, session: str = "s1", tool: str = "bash",
             decision: str = "allowed") -> None:
        """Record one call (started + finished) on the server's own loop."""
        async def both() -> None:
            common = {"call_id": f"call_{n}", "session_id": session, "tool": tool, "policy": "default",
                      "decision": decision}
            await self.audit.started(tenant, input={"n": n}, **common)
            await self.audit.finished(tenant, result=RESULT, oom_killed=False, container_id="c",
                                      image_id="i", **common)

        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(both(), self.loop).result(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
        yield http


def test_list_is_paginated_like_sessions(server: Server, client: httpx.Client) -> None:
    """GET /v1/audit pages records in seq order with data + meta {page, per_page, total, total_pages}."""
    for n in range(5):
        server.call(OWNER.id, n)
    body = client.get("/v1/audit", params={"page": 2, "per_page": 4}).json()
    assert body["meta"] == {"page": 2, "per_page": 4, "total": 10, "total_pages": 3}
    assert [r["seq"] for r in body["data"]] == [5, 6, 7, 8]
    assert body["data"][0]["phase"] == "started" and body["data"][1]["output"] == "done"
    beyond = client.get("/v1/audit", params={"page": 9, "per_page": 4}).json()
    assert beyond["data"] == [] and beyond["meta"]["total"] == 10


def test_filters_narrow_the_list(server: Server, client: httpx.Client) -> None:
    """session_id, tool, decision, phase and a time window each select only matching records."""
    server.call(OWNER.id, 0, session="a", tool="bash")
    server.call(OWNER.id, 1, session="b", tool="read_file")
    server.call(OWNER.id, 2, session="b", tool="bash", decision="denied")

    def seqs(**params: Any) -> list[int]:
        response = client.get("/v1/audit", params=params)
        assert response.status_code == 200, response.text
        return [r["seq"] for r in response.json()["data"]]

    assert seqs(session_id="b") == [3, 4, 5, 6]
    assert seqs(tool="bash") == [1, 2, 5, 6]
    assert seqs(decision="denied") == [5, 6]
    assert seqs(session_id="b", tool="bash", phase="finished") == [6]
    records = client.get("/v1/audit").json()["data"]
    assert seqs(since=records[2]["ts"], until=records[3]["ts"]) == [3, 4]
    assert seqs(since="2000-01-01T00:00:00+02:00", until=str(time.time() + 60)) == [1, 2, 3, 4, 5, 6]
    assert seqs(since=str(time.time() + 60)) == []


@pytest.mark.parametrize(("params", "code"), [
    ({"since": "yesterday"}, "INVALID_TIMESTAMP"),
    ({"until": "2026-01-01"}, "INVALID_TIMESTAMP"),
    ({"since": "2026-01-01T00:00:00"}, "INVALID_TIMESTAMP"),
    ({"since": "nan"}, "INVALID_TIMESTAMP"),
    ({"until": "1e30"}, "INVALID_TIMESTAMP"),
    ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "INVALID_FILTER"),
    ({"decision": "maybe"}, "INVALID_FILTER"),
    ({"phase": "middle"}, "INVALID_FILTER"),
])
def test_bad_filters_are_422_with_a_stable_code(client: httpx.Client, params: dict[str, str],
                                                code: str) -> None:
    """Unparseable times and unknown filter values answer 422 with a stable code, on list and export."""
    for path in ("/v1/audit", "/v1/audit/export"):
        response = client.get(path, params=params)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == code


def test_bad_pagination_is_a_clean_422(client: httpx.Client) -> None:
    """page/per_page out of range are refused through the app's validation error shape, not a 500."""
    for params in ({"page": 0}, {"per_page": 1000}, {"page": "x"}):
        response = client.get("/v1/audit", params=params)
        assert response.status_code == 422
        assert set(response.json()["error"]) == {"code", "message", "status"}


def test_tenants_see_only_their_own_records(server: Server, client: httpx.Client) -> None:
    """Each tenant's list, export and verify cover its own chain only."""
    server.call("team-alpha", 0)
    server.call("team-beta", 0)
    server.call("team-beta", 1)
    alpha = client.get("/v1/audit", headers={"X-Tenant-ID": "team-alpha"}).json()
    assert alpha["meta"]["total"] == 2 and {r["tenant"] for r in alpha["data"]} == {"team-alpha"}
    assert client.get("/v1/audit").json()["meta"]["total"] == 0
    beta = client.get("/v1/audit/verify", headers={"X-Tenant-ID": "team-beta"}).json()
    assert beta == {"ok": True, "records": 4, "first_bad_seq": None, "reason": None}
    export = client.get("/v1/audit/export", headers={"X-Tenant-ID": "team-alpha"}).text
    assert '"team-beta"' not in export
    assert client.get("/v1/audit", headers={"X-Tenant-ID": "sp ace"}).status_code == 400
    assert client.get("/v1/audit", headers={"X-Tenant-ID": "../x"}).json()["meta"]["total"] == 0  # a safe name


def test_export_streams_json_lines_that_verify_offline(server: Server, client: httpx.Client) -> None:
    """The export streams as application/x-ndjson and ends in a signed head the offline verifier accepts."""
    for n in range(300):
        server.call(OWNER.id, n)
    with client.stream("GET", "/v1/audit/export") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert "content-length" not in response.headers  # streamed, not built in memory first
        assert "attachment" in response.headers["content-disposition"]
        lines = list(response.iter_lines())
    assert json.loads(lines[0])["type"] == "export" and json.loads(lines[-1])["type"] == "head"
    assert len(lines) == 602
    verdict = verify_lines(lines, server.audit.public_key)
    assert verdict.ok and verdict.records == 600 and verdict.tail_authenticated


def test_export_of_an_empty_log_still_has_a_signed_head(server: Server, client: httpx.Client) -> None:
    """A tenant with no records exports a head at seq 0 that verifies."""
    lines = client.get("/v1/audit/export").text.splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["seq"] == 0
    verdict = verify_lines(lines, server.audit.public_key)
    assert verdict.ok and verdict.records == 0


def test_verify_reports_tampering(server: Server, client: httpx.Client) -> None:
    """After a record is edited in audit.db, /v1/audit/verify names its seq."""
    for n in range(3):
        server.call(OWNER.id, n)
    assert client.get("/v1/audit/verify").json()["ok"] is True
    with sqlite3.connect(server.audit.path) as conn:
        conn.execute("UPDATE records SET body = replace(body, '\"done\"', '\"fine\"') WHERE seq = 4")
    verdict = client.get("/v1/audit/verify").json()
    assert verdict["ok"] is False and verdict["first_bad_seq"] == 4 and verdict["reason"]


def test_closed_log_answers_503(server: Server, client: httpx.Client) -> None:
    """Without an open audit log the routes answer 503 AUDIT_UNAVAILABLE instead of crashing."""
    server.app.state.services = SimpleNamespace(audit=None)
    for path in ("/v1/audit", "/v1/audit/export", "/v1/audit/verify"):
        response = client.get(path)
        assert response.status_code == 503 and response.json()["error"]["code"] == "AUDIT_UNAVAILABLE"


def test_public_key_lets_a_tenant_verify_its_export_offline(server: Server, client: httpx.Client,
                                                           tmp_path: Path) -> None:
    """GET /v1/audit/key gives the server's Ed25519 public key (no secret), which authenticates the export."""
    server.call("team-alpha", 0)
    headers = {"X-Tenant-ID": "team-alpha"}
    key = client.get("/v1/audit/key", headers=headers)
    assert key.status_code == 200 and key.json()["algorithm"] == "Ed25519"
    assert key.json()["origin"] == key.json()["key_name"] + "/team-alpha"
    assert "PRIVATE" not in key.text and len(base64.b64decode(key.json()["public_key"])) == 32
    (tmp_path / "alpha.pub").write_text(key.text)
    (tmp_path / "alpha.jsonl").write_text(client.get("/v1/audit/export", headers=headers).text)
    out = io.StringIO()
    assert verify_file(tmp_path / "alpha.jsonl", public_key=tmp_path / "alpha.pub", out=out) == 0
    assert "tail=authenticated" in out.getvalue()
    other = client.get("/v1/audit/key", headers={"X-Tenant-ID": "team-beta"}).json()
    assert other["vkey"] == key.json()["vkey"] and other["origin"].endswith("/team-beta")


def test_filtered_export_is_marked_and_checks_as_partial(server: Server, client: httpx.Client) -> None:
    """An export with filters says so in its first line and verifies record by record."""
    server.call(OWNER.id, 0, session="a")
    server.call(OWNER.id, 1, session="b")
    lines = client.get("/v1/audit/export", params={"session_id": "b", "since": "2000-01-01t00:00:00z"}).text
    rows = [json.loads(line) for line in lines.splitlines()]
    assert rows[0]["filters"]["session_id"] == "b" and rows[-1]["filtered"] is True
    assert [r["seq"] for r in rows[1:-1]] == [3, 4]
    verdict = verify_lines(lines.splitlines(), server.audit.public_key)
    assert verdict.ok and verdict.records == 2 and "filtered" in (verdict.reason or "")
