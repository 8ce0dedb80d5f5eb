"""Health, user, account and the error shape for every kind of bad request, through the ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from server.app import build_app
from server.settings import Settings

pytestmark = pytest.mark.anyio


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["status"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in resp.text


async def test_health(client: httpx.AsyncClient) -> None:
    """GET /health answers ok with version and uptime."""
    resp = await client.get("/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok" and body["version"] and body["uptime_s"] >= 0


async def test_me_is_owner_and_persists(make_settings: Callable[..., Settings], run_app: Any) -> None:
    """GET /me is the owner, created at first start and the same after a restart."""
    settings = make_settings()
    async with run_app(build_app(settings)) as client:
        first = (await client.get("/me")).json()
    async with run_app(build_app(settings)) as client:
        second = (await client.get("/me")).json()
    assert first["tenant"] == "owner" and first["role"] == "owner" and first["id"].startswith("usr_")
    assert first["id"] == second["id"] and first["created_at"] == second["created_at"]


async def test_me_of_a_tenant(client: httpx.AsyncClient) -> None:
    """A tenant's /me is its own member user, stable across calls."""
    a = (await client.get("/me", headers={"X-Tenant-ID": "team-alpha"})).json()
    b = (await client.get("/me", headers={"X-Tenant-ID": "team-alpha"})).json()
    assert a == b and a["tenant"] == "team-alpha" and a["role"] == "member" and a["is_owner"] is False


async def test_account_signed_out(client: httpx.AsyncClient) -> None:
    """/api/ai/account and /me/auth/status answer the signed-out shape, never an error."""
    account = (await client.get("/api/ai/account")).json()
    assert account["signed_in"] is False and account["email"] is None
    status = await client.get("/me/auth/status")
    assert status.status_code == 200
    assert status.json() == {"signed_in": False, "email": None, "expires_at": None, "balance": None,
                             "manual_key_present": False, "preferred_source": "manual"}


async def test_unknown_route(client: httpx.AsyncClient) -> None:
    """An unknown route is 404 NOT_FOUND in the error shape."""
    assert_error(await client.get("/nope/nothing"), 404, "NOT_FOUND")


async def test_method_not_allowed(client: httpx.AsyncClient) -> None:
    """A wrong method is 405 METHOD_NOT_ALLOWED in the error shape."""
    assert_error(await client.delete("/health"), 405, "METHOD_NOT_ALLOWED")
    assert_error(await client.put("/sessions"), 405, "METHOD_NOT_ALLOWED")


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    """A body that is not JSON is 400 MALFORMED_JSON."""
    resp = await client.post("/sessions", content=b'{"title": ', headers={"content-type": "application/json"})
    assert_error(resp, 400, "MALFORMED_JSON")


async def test_unparseable_json(client: httpx.AsyncClient) -> None:
    """JSON the parser gives up on (a 5000-digit number) is 400 MALFORMED_JSON; absurd nesting never reaches
    the parser: the body scan refuses it as 422 JSON_TOO_DEEP."""
    resp = await client.post("/sessions", content=b'{"title": ' + b"1" * 5000 + b"}",
                             headers={"content-type": "application/json"})
    assert_error(resp, 400, "MALFORMED_JSON")
    resp = await client.post("/sessions", content=b"[" * 100_000, headers={"content-type": "application/json"})
    assert_error(resp, 422, "JSON_TOO_DEEP")


async def test_unknown_field_rejected(client: httpx.AsyncClient) -> None:
    """Request models forbid unknown fields (422 VALIDATION_ERROR naming the field)."""
    resp = await client.post("/sessions", json={"title": "x", "colour": "red"})
    assert_error(resp, 422, "VALIDATION_ERROR")
    assert "colour" in resp.json()["error"]["message"]


@pytest.mark.parametrize("body", [[], "text", 5, None, {"title": 5}, {"metadata": [1]}])
async def test_wrong_types_rejected(client: httpx.AsyncClient, body: object) -> None:
    """Wrong JSON types are 422, never a 500 (JSON null is the same as no body)."""
    resp = await client.post("/sessions", json=body)
    if body is None:
        assert resp.status_code == 201
    else:
        assert_error(resp, 422, "VALIDATION_ERROR")


async def test_oversized_body_by_length(make_settings: Callable[..., Settings], run_app: Any) -> None:
    """A body over the limit (declared length) is 413 PAYLOAD_TOO_LARGE."""
    async with run_app(build_app(make_settings(max_body_bytes=2048))) as client:
        resp = await client.post("/sessions", json={"title": "x" * 5000})
        assert_error(resp, 413, "PAYLOAD_TOO_LARGE")


async def test_oversized_body_streamed(make_settings: Callable[..., Settings], run_app: Any) -> None:
    """A chunked body without Content-Length is counted as it arrives and refused past the limit."""

    async def body() -> AsyncIterator[bytes]:
        yield b'{"title": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    async with run_app(build_app(make_settings(max_body_bytes=2048))) as client:
        resp = await client.post("/sessions", content=body(), headers={"content-type": "application/json"})
        assert_error(resp, 413, "PAYLOAD_TOO_LARGE")
        small = await client.post("/sessions", json={"title": "fits"})
        assert small.status_code == 201


async def test_bad_content_length(client: httpx.AsyncClient) -> None:
    """A non-numeric Content-Length is a 400, not a crash."""
    transport = client._transport  # type: ignore[attr-defined]
    request = httpx.Request("POST", "http://testserver/sessions", headers={"content-length": "abc"},
                            content=b"")
    request.headers["content-length"] = "abc"
    resp = await transport.handle_async_request(request)
    await resp.aread()
    assert resp.status_code == 400


async def test_cors_preflight(client: httpx.AsyncClient) -> None:
    """Browsers get CORS headers (default: any origin)."""
    resp = await client.options("/sessions", headers={"Origin": "http://example.com",
                                                      "Access-Control-Request-Method": "POST"})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] in ("*", "http://example.com")
    simple = await client.get("/health", headers={"Origin": "http://example.com"})
    assert simple.headers["access-control-allow-origin"] == "*"


async def test_cors_configured_origins(make_settings: Callable[..., Settings], run_app: Any) -> None:
    """With configured origins only those are allowed."""
    async with run_app(build_app(make_settings(cors_origins=["http://app.local"]))) as client:
        ok = await client.get("/health", headers={"Origin": "http://app.local"})
        other = await client.get("/health", headers={"Origin": "http://evil.local"})
    assert ok.headers["access-control-allow-origin"] == "http://app.local"
    assert "access-control-allow-origin" not in other.headers


async def test_no_input_produces_500(client: httpx.AsyncClient) -> None:
    """A sweep of odd requests across every route never yields a 500."""
    sid = (await client.post("/sessions")).json()["session_id"]
    odd_bodies: list[bytes] = [b"", b"null", b"{}", b"[]", b'{"message": ""}', b'{"message": 1}', b"\xff\xfe",
                               b'{"api_key": "  "}', b'{"message": "' + b"a" * 10 + b'"', b"1e999999",
                               b"[" * 100_000, b'{"message": ' + b"1" * 5000 + b"}", b'{"title": "\\ud800"}',
                               b'{"title": "a\x00b"}', b'{"metadata": ' + b'{"a":' * 3000 + b"1" + b"}" * 3001]
    paths = ["/health", "/me", "/api/ai/account", "/me/auth/status", "/me/providers", "/me/providers/openai",
             "/me/providers/%2e%2e", "/sessions", f"/sessions/{sid}", f"/sessions/{sid}/message",
             f"/sessions/{sid}/events?after=-1", f"/sessions/{sid}/events?after=abc", "/sessions/..%2f",
             "/sessions?page=0", "/sessions?per_page=1000", "/sessions?page=abc"]
    for path in paths:
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            if path.endswith("/events") or ("/events?" in path and method == "GET" and "after=" not in path):
                continue
            for body in odd_bodies if method in ("POST", "PUT", "PATCH") else [b""]:
                resp = await client.request(method, path, content=body,
                                            headers={"content-type": "application/json"})
                assert resp.status_code < 500, (method, path, body, resp.text)
                if resp.status_code >= 400:
                    assert set(resp.json()) == {"error"}, (method, path, resp.text)
