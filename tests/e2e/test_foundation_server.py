"""The server as a real process: startup line, SSE follow and reconnect, restart persistence, tenant
isolation over real HTTP, and a prompt clean SIGTERM."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse an SSE line stream into {"event","id","data"} dicts (comments skipped)."""
    item: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if item:
                yield item
            item = {}
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(": ")
            item[key] = json.loads(value) if key == "data" else int(value) if key == "id" else value


def test_startup_line_and_health(serve: Callable[..., Any]) -> None:
    """One startup line names the address, tenancy mode, data dir and detected providers — never keys."""
    server = serve(env={"ANTHROPIC_API_KEY": "sk-ant-TOPSECRET-1234", "OLLAMA_HOST": "127.0.0.1:9"})
    [line] = [x for x in server.output if "listening on" in x]
    assert f"http://127.0.0.1:{server.port}" in line and str(server.data_dir) in line
    assert "tenancy:" in line and "providers: anthropic, ollama" in line
    assert httpx.get(server.base + "/health").json()["status"] == "ok"
    providers = httpx.get(server.base + "/me/providers").json()["data"]
    assert {p["name"] for p in providers} == {"anthropic", "ollama"}
    assert server.stop() == 0
    assert "TOPSECRET" not in "\n".join(server.output)


def test_invalid_setting_stops_start(openanalyst_cmd: list[str], tmp_path: Any) -> None:
    """An invalid setting exits non-zero with a message naming it."""
    import subprocess

    done = subprocess.run([*openanalyst_cmd, "--serve", "0"], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "OPENANALYST_DATA_DIR": str(tmp_path),
                               "OPENANALYST_MAX_BODY_BYTES": "tiny"})
    assert done.returncode == 2 and "OPENANALYST_MAX_BODY_BYTES" in done.stderr


@pytest.mark.timeout(60)
def test_sse_follow_and_reconnect(serve: Callable[..., Any]) -> None:
    """An SSE client gets the snapshot then events appended while it listens; reconnecting with
    Last-Event-ID misses nothing and repeats nothing."""
    server = serve()
    with httpx.Client(base_url=server.base, timeout=10) as http:
        sid = http.post("/sessions").json()["session_id"]
        turn = http.post(f"/sessions/{sid}/message", json={"message": "zero"})
        per_turn = len(list(sse_events(turn.iter_lines())))  # message, (states), error, idle
        assert per_turn >= 3
        with http.stream("GET", f"/sessions/{sid}/events") as resp:
            events = sse_events(resp.iter_lines())
            snap = next(events)
            assert snap["event"] == "snapshot" and snap["data"]["last_seq"] == per_turn
            http.post(f"/sessions/{sid}/message", json={"message": "first"}).read()
            got = [next(events) for _ in range(2)]  # read part of the turn, then drop the connection
        assert [e["id"] for e in got] == [per_turn + 1, per_turn + 2] and got[0]["event"] == "message"
        last = got[-1]["id"]
        http.post(f"/sessions/{sid}/message", json={"message": "second"}).read()  # while disconnected
        with http.stream("GET", f"/sessions/{sid}/events", headers={"Last-Event-ID": str(last)}) as resp:
            events = sse_events(resp.iter_lines())
            assert next(events)["event"] == "snapshot"
            replayed = [next(events) for _ in range(3 * per_turn - last)]
            http.post(f"/sessions/{sid}/message", json={"message": "third"}).read()
            live = [next(events) for _ in range(per_turn)]
        seqs = [e["id"] for e in replayed + live]
        assert seqs == list(range(last + 1, 4 * per_turn + 1))
        messages = [e["data"]["content"][0]["text"] for e in replayed + live if e["event"] == "message"]
        assert messages == ["second", "third"]
        assert live[-1]["event"] == "state" and live[-1]["data"] == {"state": "idle"}
        assert live[-2]["event"] == "error" and live[-2]["data"]["code"] == "NO_PROVIDER_CONFIGURED"


@pytest.mark.timeout(90)
def test_restart_keeps_history(serve: Callable[..., Any], tmp_path: Any) -> None:
    """After a restart the session, its messages and its event log are still there."""
    first = serve(data_dir=tmp_path / "keep")
    sid = httpx.post(first.base + "/sessions", json={"title": "persist"}).json()["session_id"]
    httpx.post(f"{first.base}/sessions/{sid}/message", json={"message": "remember"}, timeout=10).read()
    assert first.stop() == 0
    second = serve(data_dir=tmp_path / "keep")
    detail = httpx.get(f"{second.base}/sessions/{sid}").json()
    total = detail["last_seq"]
    assert detail["title"] == "persist" and total >= 3
    assert detail["messages"][0]["content"] == [{"type": "text", "text": "remember"}]
    with httpx.stream("GET", f"{second.base}/sessions/{sid}/events?after=0", timeout=10) as resp:
        events = sse_events(resp.iter_lines())
        got = [next(events) for _ in range(total + 1)]
    assert [e.get("id") for e in got] == [None, *range(1, total + 1)]
    assert got[1]["event"] == "message" and got[-1]["data"] == {"state": "idle"}


def test_tenant_isolation(serve: Callable[..., Any]) -> None:
    """Tenant B cannot list, read, stream, message or delete tenant A's session (404 as if missing)."""
    server = serve()
    a, b = {"X-Tenant-ID": "team-alpha"}, {"X-Tenant-ID": "team-beta"}
    with httpx.Client(base_url=server.base, timeout=10) as http:
        sid = http.post("/sessions", headers=a).json()["session_id"]
        assert http.get("/sessions", headers=b).json()["data"] == []
        assert http.get(f"/sessions/{sid}", headers=b).status_code == 404
        assert http.post(f"/sessions/{sid}/message", headers=b, json={"message": "x"}).status_code == 404
        with http.stream("GET", f"/sessions/{sid}/events", headers=b) as resp:
            assert resp.status_code == 404
        assert http.delete(f"/sessions/{sid}", headers=b).status_code == 404
        assert http.get(f"/sessions/{sid}", headers=a).status_code == 200
        assert http.delete(f"/sessions/{sid}", headers=a).status_code == 204


@pytest.mark.timeout(60)
def test_sigterm_with_open_stream(serve: Callable[..., Any]) -> None:
    """SIGTERM with a live SSE client connected exits 0 promptly and ends the client's stream."""
    server = serve()
    sid = httpx.post(server.base + "/sessions").json()["session_id"]
    connected, ended = threading.Event(), threading.Event()

    def follow() -> None:
        try:
            with httpx.stream("GET", f"{server.base}/sessions/{sid}/events", timeout=30) as resp:
                for line in resp.iter_lines():
                    if line == "event: snapshot":
                        connected.set()
        except httpx.HTTPError:
            pass
        ended.set()

    threading.Thread(target=follow, daemon=True).start()
    assert connected.wait(10)
    started = time.monotonic()
    assert server.stop(timeout=10) == 0
    assert time.monotonic() - started < 8
    assert ended.wait(10)


@pytest.mark.timeout(60)
def test_api_key_deployment(serve: Callable[..., Any], tmp_path: Any, openanalyst_cmd: list[str]) -> None:
    """`openanalyst keys create --tenant T` makes a key the running server accepts, bound to T."""
    import subprocess

    data = tmp_path / "keys"
    server = serve(env={"OPENANALYST_REQUIRE_API_KEY": "true"}, data_dir=data)
    assert any("API key required" in line for line in server.output)
    made = subprocess.run([*openanalyst_cmd, "--data-dir", str(data), "keys", "create", "--tenant", "acme"],
                          capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("oak_") and key not in made.stderr
    assert httpx.get(server.base + "/me").status_code == 401
    me = httpx.get(server.base + "/me", headers={"Authorization": f"Bearer {key}", "X-Tenant-ID": "other"})
    assert me.status_code == 200 and me.json()["tenant"] == "acme"
    assert httpx.get(server.base + "/health").status_code == 200


@pytest.mark.timeout(30)
def test_sigint_exits_zero(serve: Callable[..., Any]) -> None:
    """Ctrl-C (SIGINT) stops the server cleanly with exit code 0."""
    import signal

    server = serve()
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=15) == 0


@pytest.mark.timeout(120)
def test_slow_subscriber_over_tcp(serve: Callable[..., Any]) -> None:
    """A client that stops reading fills its socket, then its bounded queue: it is told SUBSCRIBER_TOO_SLOW
    (after every event it was owed up to that point) and cut off, while appends stay fast and a reading
    subscriber receives everything."""
    import re
    import socket as sk

    server = serve(env={"OPENANALYST_ENABLE_TEST_HOOKS": "1", "OPENANALYST_SSE_QUEUE_EVENTS": "8"})
    count, blob = 300, "x" * 100_000
    with httpx.Client(base_url=server.base, timeout=30) as http:
        sid = http.post("/sessions").json()["session_id"]
        stalled = sk.socket()
        stalled.setsockopt(sk.SOL_SOCKET, sk.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", server.port))
        stalled.settimeout(20)
        stalled.sendall(f"GET /sessions/{sid}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = b""
        while b"event: snapshot" not in head:
            head += stalled.recv(4096)  # subscribed; from now on it reads nothing until the end
        follower_ids: list[int] = []
        following = threading.Event()

        def follow() -> None:
            with httpx.stream("GET", f"{server.base}/sessions/{sid}/events", timeout=30) as resp:
                for line in resp.iter_lines():
                    if line == "event: snapshot":
                        following.set()
                    elif line.startswith("id: "):
                        follower_ids.append(int(line[4:]))
                        if follower_ids[-1] == count:
                            return

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        assert following.wait(10)
        slowest = 0.0
        for n in range(count):
            t0 = time.monotonic()
            resp = http.post(f"/_test/sessions/{sid}/events",
                             json={"type": "assistant_delta", "data": {"n": n, "text": blob}})
            assert resp.status_code == 200
            slowest = max(slowest, time.monotonic() - t0)
        reader.join(60)
        assert follower_ids == list(range(1, count + 1))
        assert slowest < 2.0  # the writer never waited for the stalled client
        received = head
        while b"SUBSCRIBER_TOO_SLOW" not in received or not received.endswith(b"0\r\n\r\n"):
            chunk = stalled.recv(1 << 20)
            assert chunk, "connection closed before the overflow notice"
            received += chunk
        stalled.close()
    ids = [int(x) for x in re.findall(rb"\nid: (\d+)\n", received)]
    last = json.loads(re.findall(rb'data: (\{"code":"SUBSCRIBER_TOO_SLOW".*?\})\n', received)[0])["last_event_id"]
    assert ids == list(range(1, last + 1)) and last < count
