"""GET /sessions without paging parameters lists every session (the spec: "List all sessions for the user")."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_no_paging_parameters_lists_all(client: httpx.AsyncClient) -> None:
    """25 sessions (more than one default page) all come back with no parameters; paging still works."""
    ids = [(await client.post("/sessions", json={"title": str(i)})).json()["session_id"] for i in range(25)]
    body = (await client.get("/sessions")).json()
    assert sorted(s["session_id"] for s in body["data"]) == sorted(ids)
    assert body["meta"] == {"page": 1, "per_page": 25, "total": 25, "total_pages": 1}
    paged = (await client.get("/sessions", params={"page": 2})).json()
    assert paged["meta"] == {"page": 2, "per_page": 20, "total": 25, "total_pages": 2} and len(paged["data"]) == 5
    assert len((await client.get("/sessions", params={"per_page": 3})).json()["data"]) == 3


async def test_no_sessions_is_an_empty_page(client: httpx.AsyncClient) -> None:
    body = (await client.get("/sessions")).json()
    assert body == {"data": [], "meta": {"page": 1, "per_page": 1, "total": 0, "total_pages": 0}}
