"""Tenancy through the ASGI app: tenant id rules, isolation (404 like missing), single mode, API keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from server.app import build_app
from server.settings import Settings

pytestmark = pytest.mark.anyio
A = {"X-Tenant-ID": "team-alpha"}
B = {"X-Tenant-ID": "team-beta"}


@pytest.mark.parametrize("value", ["", "x" * 257, "sp ace", "\u00fcn\u00ef", "a\tb", "OWNER", "owner"])
async def test_invalid_tenant_ids(client: httpx.AsyncClient, value: str) -> None:
    """Tenant ids outside 1-256 printable ASCII characters without spaces, and the reserved owner, are 400."""
    resp = await client.get("/sessions", headers={"X-Tenant-ID": value.encode()})
    assert resp.status_code == 400, value
    assert resp.json()["error"]["code"] == "INVALID_TENANT_ID"


@pytest.mark.parametrize("value", ["a", "A.b_c-9", "x" * 64, "_x", "-x", "1.2.3", ".hidden", "a/b", "..", "a\\b",
                                   "x" * 256, "alice@example.com", "auth0|5f7c8ec7c33c6c004bbafe82", "org:team"])
async def test_valid_tenant_ids(client: httpx.AsyncClient, value: str) -> None:
    """Valid tenant ids are accepted."""
    resp = await client.get("/sessions", headers={"X-Tenant-ID": value})
    assert resp.status_code == 200


async def test_tenant_isolation(client: httpx.AsyncClient, open_stream: Any) -> None:
    """Tenant B cannot list, read, stream, message or delete tenant A's session: 404 like a missing one."""
    sid = (await client.post("/sessions", headers=A, json={"title": "alpha"})).json()["session_id"]
    assert [s["session_id"] for s in (await client.get("/sessions", headers=A)).json()["data"]] == [sid]
    assert (await client.get("/sessions", headers=B)).json()["data"] == []
    assert (await client.get("/sessions")).json()["data"] == []  # the owner is a tenant too
    missing = (await client.get("/sessions/sess_doesnotexist", headers=B)).json()
    for method, path, kw in [("GET", f"/sessions/{sid}", {}), ("DELETE", f"/sessions/{sid}", {}),
                             ("POST", f"/sessions/{sid}/message", {"json": {"message": "hi"}}),
                             ("GET", f"/sessions/{sid}/events", {})]:
        resp = await client.request(method, path, headers=B, **kw)
        assert resp.status_code == 404, (method, path)
        assert resp.json()["error"]["code"] == missing["error"]["code"] == "SESSION_NOT_FOUND"
    assert (await client.get(f"/sessions/{sid}", headers=A)).status_code == 200


async def test_single_mode_refuses_header(make_settings: Callable[..., Settings], run_app: Any) -> None:
    """In single-tenant mode a tenant header is refused rather than silently ignored."""
    async with run_app(build_app(make_settings(tenancy="single"))) as client:
        assert (await client.get("/sessions")).status_code == 200
        resp = await client.get("/sessions", headers=A)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "TENANT_HEADER_NOT_ALLOWED"


async def test_api_keys(make_settings: Callable[..., Settings], run_app: Any) -> None:
    """With require_api_key: no/invalid key is 401, a bound key fixes the tenant, an unbound one lets the
    header choose; /health stays open."""
    app = build_app(make_settings(require_api_key=True))
    async with run_app(app) as client:
        keys = app.state.services.api_keys
        bound = (await keys.create("team-alpha")).key
        unbound = (await keys.create(None)).key
        assert (await client.get("/health")).status_code == 200
        for headers in [{}, {"Authorization": "Bearer nope"}, {"Authorization": bound + "x"},
                        {"Authorization": "Bearer " + bound[:-1] + "x"}, {"Authorization": "Basic abc"},
                        {"Authorization": "Bearer oak_zz_yy"}]:
            resp = await client.get("/me", headers=headers)
            assert resp.status_code == 401, headers
            assert resp.json()["error"]["code"] in ("API_KEY_REQUIRED", "INVALID_API_KEY")
        me = await client.get("/me", headers={"Authorization": f"Bearer {bound}", **B})
        assert me.json()["tenant"] == "team-alpha"  # the header cannot override a bound key
        me = await client.get("/me", headers={"Authorization": f"Bearer {unbound}", **B})
        assert me.json()["tenant"] == "team-beta"
        me = await client.get("/me", headers={"Authorization": f"Bearer {unbound}"})
        assert me.json()["tenant"] == "owner"
        row = (await app.state.services.db.read("SELECT secret_hash FROM api_keys"))[0][0]
        assert bound.split("_", 2)[2] not in row  # stored hashed


async def test_api_key_bad_tenant(make_settings: Callable[..., Settings], run_app: Any) -> None:
    """A key cannot be bound to an invalid tenant id."""
    app = build_app(make_settings())
    async with run_app(app):
        with pytest.raises(Exception, match="X-Tenant-ID"):
            await app.state.services.api_keys.create("has space")
