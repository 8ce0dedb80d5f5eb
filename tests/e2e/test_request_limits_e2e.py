"""Request limits against the server as a real process over real HTTP (raw sockets for the header attacks):
header size and count, repeated identity headers, body size and JSON depth/size on every route, auditing of
refused tool input, and server-side tools counted by the call cap."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from agent_support import parse_sse, read_until_idle, server_env
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply

pytestmark = [pytest.mark.e2e]

MiB = 1024 * 1024
CAPPED_POLICY = """
name = "capped"
cpus = 0.5
memory_mb = 256
pids = 128
tmpfs_mb = 16
nofile = 256
fsize_mb = 16
default_timeout_s = 20
max_timeout_s = 60
output_cap_bytes = 4096
max_concurrent_calls = 2
"""


def exchange(port: int, request: bytes, timeout: float = 20.0) -> bytes:
    """Send raw bytes and read until the server closes (or stops answering): what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not part:
                break
            received += part
            if b"\r\n\r\n" in received:
                head, _, body = received.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
        return received


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body) if body else None


def get(path: str, extra: list[str]) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *extra, "Connection: close"])
            + "\r\n\r\n").encode()


@pytest.fixture
def server(serve: Callable[..., Any], tmp_path: Path) -> Any:
    """A server (no sandbox needed: only server-side tools are called) where tenant `capper` may run 2 calls."""
    policy = tmp_path / "capped.toml"
    policy.write_text(CAPPED_POLICY)
    return serve(env={"OPENANALYST_TENANT_POLICIES": json.dumps({"capper": str(policy)})})


def attack(port: int, total: int) -> int:
    """Send one request whose single header is `total` bytes; return how much the server took before closing."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        chunk = b"a" * MiB
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
    return sent


def test_a_64_mib_header_is_cut_off_and_memory_stays_bounded(server: Any) -> None:
    """Four 64 MiB headers: each connection is closed after a few MiB at most, the server grows by less
    than 20 MiB (httptools took them whole: ~120 MB each), and it keeps serving."""
    proc = psutil.Process(server.proc.pid)
    assert httpx.get(f"{server.base}/health").status_code == 200
    before = proc.memory_info().rss
    taken = [attack(server.port, 64 * MiB) for _ in range(4)]
    after = proc.memory_info().rss
    assert all(sent < 32 * MiB for sent in taken), taken
    assert after - before < 20 * MiB, (before, after)
    assert httpx.get(f"{server.base}/health").status_code == 200


def test_an_oversized_header_is_431_in_the_error_shape(server: Any) -> None:
    """A 20 KiB header (past the 16 KiB budget) is a 431 HEADERS_TOO_LARGE with our error body; 12 KiB passes."""
    status, headers, body = parse(exchange(server.port, get("/health", ["X-Big: " + "b" * 20_000])))
    assert status == 431 and headers["connection"] == "close"
    assert body["error"]["code"] == "HEADERS_TOO_LARGE" and body["error"]["status"] == 431
    status, _, _ = parse(exchange(server.port, get("/health", ["X-Big: " + "b" * 12_000])))
    assert status == 200


def test_a_head_still_incomplete_past_the_budget_is_431_from_the_parser(server: Any) -> None:
    """20 KiB of a head with no end in sight: the parser itself answers 431 in our error shape and closes."""
    raw = exchange(server.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"c" * 20_000)
    status, headers, body = parse(raw)
    assert raw.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert status == 431 and headers["connection"] == "close"
    assert body["error"] == {"code": "HEADERS_TOO_LARGE", "status": 431,
                             "message": "the request line and headers are larger than the limit of 16384 bytes"}


def test_too_many_headers_is_431(server: Any) -> None:
    """150 small header fields (well under the byte budget) are 431 TOO_MANY_HEADERS."""
    status, _, body = parse(exchange(server.port, get("/health", [f"X-H{i}: 1" for i in range(150)])))
    assert status == 431 and body["error"]["code"] == "TOO_MANY_HEADERS"


@pytest.mark.parametrize("name", ["X-Tenant-ID", "Authorization"])
def test_a_repeated_identity_header_is_400(server: Any, name: str) -> None:
    """Two X-Tenant-ID (or Authorization) fields are 400 DUPLICATE_HEADER, not "the first one wins"."""
    value = "alice" if name == "X-Tenant-ID" else "Bearer k"
    status, _, body = parse(exchange(server.port, get("/sessions", [f"{name}: {value}", f"{name}: {value}2"])))
    assert status == 400 and body["error"]["code"] == "DUPLICATE_HEADER"
    status, _, _ = parse(exchange(server.port, get("/sessions", ["X-Tenant-ID: alice"])))
    assert status == 200


def body_routes(base: str) -> list[tuple[str, str]]:
    spec = httpx.get(f"{base}/openapi.json").json()
    # A route whose body is not JSON (PUT /v1/files/{path}: raw file bytes, capped by the policy's
    # files_max_bytes while streaming, tested in test_files_e2e) is not held to the JSON limits.
    routes = [(method.upper(), path.replace("{", "").replace("}", ""))
              for path, methods in spec["paths"].items() for method, op in methods.items()
              if method in ("post", "put", "patch")
              and "application/json" in op.get("requestBody", {}).get("content", {"application/json": {}})]
    assert len(routes) >= 5
    return routes


def send(base: str, method: str, path: str, content: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.request(method, f"{base}{path}", content=content, timeout=30,
                         headers={"content-type": "application/json", "x-tenant-id": "edge", **(headers or {})})


def test_every_route_refuses_large_deep_and_wide_bodies(server: Any) -> None:
    """On every POST/PUT/PATCH route: a 3 MiB body (declared, or chunked) is 413, 200-deep JSON is 422
    JSON_TOO_DEEP, 200 000 values are 422 JSON_TOO_LARGE; never a 500."""
    deep = ('{"input":' + '[' * 200 + ']' * 200 + '}').encode()
    wide = ('{"input":{"x":[' + ",".join(["0"] * 200_000) + ']}}').encode()
    big = b'{"input":{"x":"' + b"z" * (3 * MiB) + b'"}}'

    def chunked() -> Any:
        for start in range(0, len(big), 256 * 1024):
            yield big[start:start + 256 * 1024]

    for method, path in body_routes(server.base):
        for content, status, code in ((big, 413, "PAYLOAD_TOO_LARGE"), (chunked(), 413, "PAYLOAD_TOO_LARGE"),
                                      (deep, 422, "JSON_TOO_DEEP"), (wide, 422, "JSON_TOO_LARGE")):
            answer = send(server.base, method, path, content)
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (method, path)


def audit(base: str, tenant: str, **query: Any) -> list[dict[str, Any]]:
    answer = httpx.get(f"{base}/v1/audit", params={"per_page": 100, **query}, headers={"x-tenant-id": tenant})
    assert answer.status_code == 200, answer.text
    records: list[dict[str, Any]] = answer.json()["data"]
    return records


def test_deep_tool_input_is_refused_and_the_audit_stays_readable(server: Any) -> None:
    """500- and 300-deep input to structured_output is 422 JSON_TOO_DEEP (it was a 500, and a 300-deep input
    made the tenant's GET /v1/audit a 500 from then on); each refusal is still recorded for its tenant, with
    the sha256 of the exact bytes sent and nothing of the unparsed body; 60 deep is taken, recorded and listed."""
    hashes = []
    for levels in (500, 300):
        body = '{"input":' + '{"a":' * levels + "1" + "}" * levels + "}"
        hashes.append(hashlib.sha256(body.encode()).hexdigest())
        answer = send(server.base, "POST", "/v1/tools/structured_output", body, {"x-tenant-id": "deep"})
        assert (answer.status_code, answer.json()["error"]["code"]) == (422, "JSON_TOO_DEEP")
    body = '{"input":' + '{"a":' * 60 + "1" + "}" * 60 + "}"
    answer = send(server.base, "POST", "/v1/tools/structured_output", body, {"x-tenant-id": "deep"})
    assert answer.status_code == 200 and answer.json()["error"]["code"] == "TOOL_UNAVAILABLE"
    records = audit(server.base, "deep")
    assert [r["phase"] for r in records] == ["started", "finished"] * 3
    for (started, finished), raw_sha in zip(zip(records[0:4:2], records[1:4:2], strict=True), hashes, strict=True):
        assert started["decision"] == finished["decision"] == "denied"
        assert started["input"] == {"refused_input": None, "raw_sha256": raw_sha}
        assert finished["error_code"] == "JSON_TOO_DEEP" and started["tool"] == "structured_output"
    assert records[4]["decision"] == "allowed"
    assert httpx.get(f"{server.base}/v1/audit/export", headers={"x-tenant-id": "deep"}).status_code == 200


@pytest.mark.parametrize(("body", "code"), [
    (b'{"input": {"seconds": "later"}}', "INVALID_TOOL_INPUT"),
    (b'{"input": [1, 2, 3]}', "INVALID_TOOL_INPUT"),
    (b'{"input": {"seconds": 1, "extra": ' + b'[' * 40 + b']' * 40 + b'}}', "INVALID_TOOL_INPUT"),
])
def test_invalid_tool_input_is_audited(server: Any, body: bytes, code: str) -> None:
    """A call refused for its input leaves a started record (denied, a shallow copy, the sha256 of the exact
    request bytes) and a finished record with the real error code."""
    answer = send(server.base, "POST", "/v1/tools/sleep", body, {"x-tenant-id": "auditee"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, code)
    started, finished = audit(server.base, "auditee", tool="sleep")
    assert (started["phase"], started["decision"], finished["decision"]) == ("started", "denied", "denied")
    assert started["input"]["raw_sha256"] == hashlib.sha256(body).hexdigest()
    assert finished["error_code"] == code and finished["call_id"] == started["call_id"]


def test_server_side_tools_count_toward_the_call_cap(server: Any) -> None:
    """With a cap of 2, two running `sleep` calls make a third 429 TOO_MANY_CALLS (recorded with that code);
    once they end, calls run again."""
    results: list[int] = []

    def sleeper() -> None:
        results.append(httpx.post(f"{server.base}/v1/tools/sleep", json={"input": {"seconds": 4}},
                                  headers={"x-tenant-id": "capper"}, timeout=30).status_code)

    threads = [threading.Thread(target=sleeper) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 15
    while len(audit(server.base, "capper", phase="started")) < 2:
        assert time.monotonic() < deadline, "the two sleeps did not start"
        time.sleep(0.05)  # poll interval against the deadline above
    over = httpx.post(f"{server.base}/v1/tools/sleep", json={"input": {"seconds": 0.1}},
                      headers={"x-tenant-id": "capper"}, timeout=30)
    assert over.status_code == 429 and over.json()["error"]["code"] == "TOO_MANY_CALLS"
    assert int(over.headers["retry-after"]) >= 1
    refused = [r for r in audit(server.base, "capper", phase="finished") if r["error_code"] == "TOO_MANY_CALLS"]
    assert len(refused) == 1
    for thread in threads:
        thread.join(timeout=30)
    assert results == [200, 200]
    again = httpx.post(f"{server.base}/v1/tools/sleep", json={"input": {"seconds": 0.1}},
                       headers={"x-tenant-id": "capper"}, timeout=30)
    assert again.status_code == 200 and again.json()["error"] is None


def test_a_model_tool_call_too_deep_is_refused_recorded_and_everything_stays_readable(
        serve: Callable[..., Any], tmp_path: Path) -> None:
    """A model (fake Anthropic over real HTTP) sends 300-deep tool arguments: the model gets JSON_TOO_DEEP back,
    the call is recorded as denied with a shallow copy, and the tenant's audit, session and events still read
    (the stored deep input made GET /v1/audit a 500 before)."""
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(300):
        deep = {"a": deep}
    with FakeAnthropic() as fake:
        fake.script([Reply.tool_call("structured_output", deep), Reply.text("done")])
        workspace = tmp_path / "model-ws"
        workspace.mkdir()
        server = serve(env=server_env(fake.base_url, workspace))
        headers = {"x-tenant-id": "modeldeep"}
        session_id = httpx.post(f"{server.base}/sessions", json={}, headers=headers).json()["session_id"]
        with httpx.stream("POST", f"{server.base}/sessions/{session_id}/message", headers=headers, timeout=60,
                          json={"message": "go"}) as response:
            assert response.status_code == 200
            events = read_until_idle(response)
        results = [data for kind, data, _ in events if kind == "tool_result"]
        assert results and results[0]["error"]["code"] == "JSON_TOO_DEEP"
        started, finished = audit(server.base, "modeldeep")
        assert started["decision"] == "denied" and "nested deeper than" in json.dumps(started["input"])
        assert finished["error_code"] == "JSON_TOO_DEEP"
        assert httpx.get(f"{server.base}/sessions/{session_id}", headers=headers).status_code == 200
        with httpx.stream("GET", f"{server.base}/sessions/{session_id}/events", headers=headers,
                          timeout=30) as replay:
            assert replay.status_code == 200
            for kind, _, _ in parse_sse(replay.iter_lines()):
                if kind == "snapshot":
                    break
