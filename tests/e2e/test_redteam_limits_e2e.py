"""Red-team findings 2, 3, 4(b), 10 and the duplicate Content-Length note, replayed against the server as a
real process over real sockets: bodies in UTF-16/32 that hid their depth and size from the byte scan, idle and
half-sent connections that held descriptors for good, session metadata and session counts without a bound,
an IDNA host that crashed the provider route, and what two Content-Length fields get."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.e2e]

TENANT_A = {"X-Tenant-ID": "tenant-a"}
TENANT_B = {"X-Tenant-ID": "tenant-b"}


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def post_raw(server: Any, path: str, raw: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(server.base + path, content=raw, timeout=30,
                      headers={"content-type": "application/json", **(headers or {})})


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["status"] == status
    detail: dict[str, Any] = body["error"]
    return detail


def read_all(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """What the server sends until it closes (True) or the deadline passes (False)."""
    received = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
        try:
            part = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received, True
        if not part:
            return received, True
        received += part
    return received, False


# --- finding 2: bodies not in UTF-8 ----------------------------------------------------------------------

@pytest.fixture
def server(serve: Callable[..., Any]) -> Any:
    return serve()


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16", "utf-32-le", "utf-32"])
def test_deep_metadata_in_utf16_or_32_is_refused_and_listing_still_works(server: Any, encoding: str) -> None:
    """The red team's body: metadata 300 deep with U+2241 (UTF-16-LE bytes 41 22, an odd quote byte) so the
    byte scan saw no depth; json.loads read it as UTF-16, stored it, and every later GET /sessions was a 500.
    Now any body not in UTF-8 is 400 BODY_NOT_UTF8, nothing is stored, and the listing answers."""
    doc = {"title": "\u2241", "metadata": {"m": nested(300)}}
    raw = json.dumps(doc, ensure_ascii=False).encode(encoding)
    error = assert_error(post_raw(server, "/sessions", raw, TENANT_A), 400, "BODY_NOT_UTF8")
    assert "UTF-8" in error["message"]
    listing = httpx.get(server.base + "/sessions", headers=TENANT_A, timeout=10)
    assert listing.status_code == 200 and listing.json()["data"] == []


def test_wide_metadata_in_utf16_cannot_pass_the_item_limit(server: Any) -> None:
    """400 000 items in UTF-16 (the item limit is 100 000) are refused too; the same in UTF-8 is 422
    JSON_TOO_LARGE, as before."""
    text = json.dumps({"metadata": {"k": [0] * 400_000}}, separators=(",", ":"))  # 1.6 MB in UTF-16
    assert_error(post_raw(server, "/sessions", text.encode("utf-16-le"), TENANT_A), 400, "BODY_NOT_UTF8")
    assert_error(post_raw(server, "/sessions", text.encode(), TENANT_A), 422, "JSON_TOO_LARGE")


def test_chat_output_schema_hidden_in_utf16_is_refused_not_a_500(server: Any) -> None:
    """/v1/chat with a 900-deep output_schema in UTF-16 was a RecursionError in check_schema (500): 400; in
    UTF-8 the depth limit answers 422 JSON_TOO_DEEP. UTF-8 with a BOM and plain UTF-8 still parse."""
    doc = {"message": "hi \u2241", "stream": False, "output_schema": nested(900)}
    for path in ("/v1/chat", "/v1/chat/completions"):
        assert_error(post_raw(server, path, json.dumps(doc, ensure_ascii=False).encode("utf-16-le")), 400,
                     "BODY_NOT_UTF8")
    assert_error(post_raw(server, "/v1/chat", json.dumps(doc).encode()), 422, "JSON_TOO_DEEP")
    for raw in (b"\xef\xbb\xbf" + json.dumps({"title": "bom \u2241"}).encode(),
                json.dumps({"title": "plain \u2241"}, ensure_ascii=False).encode()):
        created = post_raw(server, "/sessions", raw)
        assert created.status_code == 201, created.text
    invalid = post_raw(server, "/sessions", b'{"title": "\xff\xfe bad"}')
    assert_error(invalid, 400, "BODY_NOT_UTF8")


def test_a_tool_call_in_utf16_is_refused(server: Any) -> None:
    """A tool call is refused the same way, in the same error shape, through the route's own refusal path."""
    raw = json.dumps({"input": {"path": "x"}}).encode("utf-16-le")
    assert_error(post_raw(server, "/v1/tools/read_file", raw, TENANT_A), 400, "BODY_NOT_UTF8")


# --- finding 3: idle, half-sent and too many connections --------------------------------------------------

@pytest.fixture
def short_deadlines(serve: Callable[..., Any]) -> Any:
    return serve(env={"OPENANALYST_HTTP_HEAD_TIMEOUT_S": "1.5", "OPENANALYST_HTTP_IDLE_TIMEOUT_S": "1"})


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_deadline(short_deadlines: Any) -> None:
    """Nothing sent: closed (no bytes) about 1 s after opening; it used to stay open for good."""
    with socket.create_connection(("127.0.0.1", short_deadlines.port)) as sock:
        opened = time.monotonic()
        received, closed = read_all(sock, opened + 10)
        took = time.monotonic() - opened
    assert closed and received == b"" and 0.8 <= took < 5, (closed, received, took)


def test_a_head_trickled_a_line_at_a_time_gets_408_within_the_head_deadline(short_deadlines: Any) -> None:
    """A partial head, then one header line every 0.3 s (each within the idle deadline, as the attack did
    every 5 s): the head deadline is not extended by them; 408 REQUEST_TIMEOUT in our error shape, closed."""
    with socket.create_connection(("127.0.0.1", short_deadlines.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        received, closed, n = b"", False, 0
        while not closed and time.monotonic() < started + 10:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(f"X-Line-{n}: {n}\r\n".encode())
            n += 1
            part, closed = read_all(sock, time.monotonic() + 0.3)
            received += part
        took = time.monotonic() - started
    assert closed and 1.3 <= took < 4, took
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), received
    assert json.loads(body)["error"] == {"code": "REQUEST_TIMEOUT", "status": 408,
                                         "message": "the request line and headers did not arrive within 1.5 s"}


def test_keep_alive_and_slow_but_complete_requests_still_work(short_deadlines: Any) -> None:
    """A client reusing its connection is served; after a response the connection is kept until the idle
    deadline; a head that completes in time is answered."""
    with httpx.Client(base_url=short_deadlines.base, timeout=10) as client:
        assert [client.get("/health").status_code for _ in range(3)] == [200, 200, 200]
    with socket.create_connection(("127.0.0.1", short_deadlines.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        received, closed = read_all(sock, time.monotonic() + 0.5)
        assert received == b"" and not closed
        sock.sendall(b"Host: 127.0.0.1\r\n\r\n")
        received, closed = read_all(sock, time.monotonic() + 5)
    assert received.startswith(b"HTTP/1.1 200 ") and closed  # then idle: closed by the keep-alive deadline


def test_connections_past_the_cap_get_503_and_the_server_recovers(serve: Callable[..., Any]) -> None:
    """With OPENANALYST_MAX_CONNECTIONS=6, six silent connections are held; the seventh gets 503
    TOO_MANY_CONNECTIONS at once and is closed; once they go, /health answers again."""
    server = serve(env={"OPENANALYST_MAX_CONNECTIONS": "6", "OPENANALYST_HTTP_IDLE_TIMEOUT_S": "60",
                        "OPENANALYST_HTTP_HEAD_TIMEOUT_S": "60"})
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(6)]
    try:
        deadline = time.monotonic() + 10
        refused = b""
        while time.monotonic() < deadline:  # the server may not have accepted all six yet
            with socket.create_connection(("127.0.0.1", server.port)) as extra:
                extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                refused, closed = read_all(extra, time.monotonic() + 5)
            if refused.startswith(b"HTTP/1.1 503 "):
                break
        assert refused.startswith(b"HTTP/1.1 503 ") and closed, refused
        assert b"\r\nretry-after: 1\r\n" in refused.partition(b"\r\n\r\n")[0]
        body = json.loads(refused.partition(b"\r\n\r\n")[2])
        assert body["error"]["code"] == "TOO_MANY_CONNECTIONS" and body["error"]["status"] == 503
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline and status != 200:
        with contextlib.suppress(httpx.TransportError):
            status = httpx.get(server.base + "/health", timeout=2).status_code
    assert status == 200
    assert any("past the cap of 6 open connections" in line for line in server.output), server.output


# --- finding 4(b): session metadata size and sessions per tenant -----------------------------------------

def test_large_metadata_is_422_and_nothing_is_stored(server: Any, sandbox_image: str) -> None:
    """{"x": "A" * 2 000 000} was stored 20 times in 0.9 s (39 MB of database): now 422
    SESSION_METADATA_TOO_LARGE past 16 KiB of JSON; just under it is accepted."""
    db = server.data_dir / "server.db"
    before = db.stat().st_size
    for _ in range(5):
        resp = httpx.post(server.base + "/sessions", json={"metadata": {"x": "A" * 2_000_000}}, timeout=30,
                          headers=TENANT_A)
        assert_error(resp, 422, "SESSION_METADATA_TOO_LARGE")
    assert httpx.get(server.base + "/sessions", headers=TENANT_A, timeout=10).json()["data"] == []
    assert db.stat().st_size - before < 1_000_000
    fits = {"x": "é" * 8000}  # 16 000 bytes of UTF-8 within 16 384 bytes of JSON
    assert httpx.post(server.base + "/sessions", json={"metadata": fits}, headers=TENANT_A,
                      timeout=30).status_code == 201
    assert_error(httpx.post(server.base + "/sessions", json={"metadata": {"x": "é" * 8200}}, headers=TENANT_A,
                            timeout=30), 422, "SESSION_METADATA_TOO_LARGE")


def test_sessions_per_tenant_are_capped_per_tenant(serve: Callable[..., Any], sandbox_image: str) -> None:
    """With OPENANALYST_MAX_SESSIONS_PER_TENANT=3 the fourth session of a tenant is 409
    SESSION_LIMIT_REACHED; another tenant is unaffected; deleting one makes room."""
    server = serve(env={"OPENANALYST_MAX_SESSIONS_PER_TENANT": "3"})

    def create(headers: dict[str, str]) -> httpx.Response:
        return httpx.post(server.base + "/sessions", json={"title": "t"}, headers=headers, timeout=30)

    made = [create(TENANT_A) for _ in range(3)]
    assert [r.status_code for r in made] == [201, 201, 201]
    assert_error(create(TENANT_A), 409, "SESSION_LIMIT_REACHED")
    assert create(TENANT_B).status_code == 201
    gone = httpx.delete(f"{server.base}/sessions/{made[0].json()['session_id']}", headers=TENANT_A, timeout=10)
    assert gone.status_code == 204
    assert create(TENANT_A).status_code == 201
    assert_error(create(TENANT_A), 409, "SESSION_LIMIT_REACHED")
    assert len(httpx.get(server.base + "/sessions", headers=TENANT_A, timeout=10).json()["data"]) == 3


# --- finding 10 and the duplicate Content-Length note -----------------------------------------------------

def test_an_invalid_idna_provider_url_is_refused_not_a_500(server: Any) -> None:
    """PUT /me/providers/openai with base_url http://xn--127-0.0.1 was a 500 (IDNAError): 422
    PROVIDER_URL_FORBIDDEN for a tenant and for the owner, nothing stored."""
    for headers in (TENANT_A, {}):
        resp = httpx.put(server.base + "/me/providers/openai", headers=headers, timeout=30,
                         json={"api_key": "sk-x-1234567890", "base_url": "http://xn--127-0.0.1"})
        assert_error(resp, 422, "PROVIDER_URL_FORBIDDEN")
        listed = httpx.get(server.base + "/me/providers", headers=headers, timeout=10).json()["data"]
        assert listed == []


def raw_post(port: int, lengths: list[str], body: bytes) -> bytes:
    head = ["POST /sessions HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            *[f"Content-Length: {n}" for n in lengths], "Connection: close"]
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        received, _ = read_all(sock, time.monotonic() + 10)
    return received


def test_two_content_length_fields(server: Any, sandbox_image: str, tmp_path: Path) -> None:
    """As docs/request-limits.md now says: identical Content-Length fields are one length (RFC 9110 §8.6
    allows it; h11 merges them), so the request is served; different ones are 400 BAD_REQUEST, closed."""
    body = b'{"title": "twice"}'
    same = raw_post(server.port, [str(len(body)), str(len(body))], body)
    assert same.startswith(b"HTTP/1.1 201 "), same
    differ = raw_post(server.port, [str(len(body)), str(len(body) + 1)], body)
    assert differ.startswith(b"HTTP/1.1 400 "), differ
    assert json.loads(differ.partition(b"\r\n\r\n")[2])["error"]["code"] == "BAD_REQUEST"
