"""API foundation benchmark: ``.venv/bin/python bench/api.py`` prints one table.

* requests/s, p50, p99 for ``GET /health`` and ``POST /sessions`` against ``openanalyst --serve`` started as a
  real process, with the same load against a bare uvicorn "hello" ASGI app (the baseline, same run, same
  uvicorn settings: uvloop + httptools, one worker);
* the delay from appending one event to its arrival at 1, 10 and 100 SSE subscribers.

Events are appended through the internal test hook ``POST /_test/sessions/{id}/events`` (enabled only here, by
``OPENANALYST_ENABLE_TEST_HOOKS=1``); the server stamps each event with its clock at the moment it appends it
and each subscriber subtracts that from its clock on arrival (same host, same clock), so the figure is
append → fan-out → socket → client parse, not the hook's own HTTP round trip.

The load generator is a minimal asyncio HTTP/1.1 keep-alive client (a Python HTTP library would be the
bottleneck on 2 cores); it shares the CPUs with the server, so the figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b'{"status":"ok"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")]})
    await send({"type": "http.response.body", "body": body})
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("server not ready")


class Conn:
    """One keep-alive HTTP/1.1 connection: request → (status, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.w.write(head.encode() + b"\r\n" + body)
        status_line = await self.r.readline()
        length = 0
        while (line := await self.r.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.r.readexactly(length)

    def close(self) -> None:
        self.w.close()


async def load(port: int, method: str, path: str, seconds: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        conn = await Conn.open(port)
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            status, _ = await conn.request(method, path)
            latencies.append(time.perf_counter() - t0)
            if status >= 400:
                raise SystemExit(f"{method} {path} answered {status}")
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000, "n": len(latencies)}


async def subscriber(port: int, sid: str, ready: asyncio.Event, delays: list[float], expected: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /sessions/{sid}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = 0
    while got < expected:
        line = await reader.readline()
        if not line:
            break
        if line.startswith(b"event: snapshot"):
            ready.set()
        elif line.startswith(b'data: {"n"'):
            delays.append(time.time() - json.loads(line[6:])["appended_at"])
            got += 1
    writer.close()


async def fanout(port: int, subscribers: int, events: int, gap_s: float) -> dict[str, float]:
    ctl = await Conn.open(port)
    _, body = await ctl.request("POST", "/sessions")
    sid = json.loads(body)["session_id"]
    delays: list[float] = []
    readies = [asyncio.Event() for _ in range(subscribers)]
    tasks = [asyncio.create_task(subscriber(port, sid, r, delays, events)) for r in readies]
    async with asyncio.timeout(30):
        for r in readies:
            await r.wait()
    for n in range(events):
        status, _ = await ctl.request("POST", f"/_test/sessions/{sid}/events",
                                      json.dumps({"type": "assistant_delta", "data": {"n": n}}).encode())
        assert status == 200, status
        await asyncio.sleep(gap_s)  # pacing: measure delay, not saturation
    async with asyncio.timeout(60):
        await asyncio.gather(*tasks)
    ctl.close()
    delays.sort()
    return {"p50": delays[len(delays) // 2] * 1000, "p99": delays[int(len(delays) * 0.99)] * 1000,
            "max": delays[-1] * 1000, "n": len(delays)}


def append_rate(tmp: str, count: int = 20_000) -> str:
    """In-process: the cost of ``EventLog.append`` (what the agent loop pays per text delta) and how long the
    group-committing writer takes to make them all durable."""
    sys.path.insert(0, str(ROOT))
    from server.contract.events import AssistantDeltaEvent
    from server.sessions.events import EventLog
    from server.store.db import Database

    db = Database(Path(tmp) / "append.db")
    db.open_sync()
    log = EventLog(db)
    log.created("sess_bench")
    t0 = time.perf_counter()
    for n in range(count):
        log.append("owner", "sess_bench", AssistantDeltaEvent(text=f"token {n}"))
    appended = time.perf_counter() - t0
    asyncio.run(db.flush())
    durable = time.perf_counter() - t0
    db.close_sync()
    return (f"{appended / count * 1e6:6.1f} µs/append   {count / appended:8.0f} appends/s   all {count} committed"
            f" after {durable * 1000:.0f} ms")


def start(argv: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


def serve_variant(impl: str, port: int, data_dir: str) -> None:
    """Child mode for ``--compare-sse``: the real app, its SSE response optionally swapped for sse-starlette's
    ``EventSourceResponse`` carrying the same pre-encoded frames."""
    sys.path.insert(0, str(ROOT))
    import uvicorn

    import server.api.events as events_api
    from server.app import build_app
    from server.settings import Settings

    if impl == "sse-starlette":
        from sse_starlette.sse import EventSourceResponse

        events_api.SSEResponse = lambda chunks: EventSourceResponse(chunks, ping=15)  # type: ignore[assignment,misc]
    settings = Settings(data_dir=Path(data_dir), enable_test_hooks=True, port=port)
    uvicorn.run(lambda: build_app(settings), factory=True, port=port, log_level="warning")


def compare_sse(events: int) -> None:
    """p99 append→arrival at 100 subscribers: our SSE response vs sse-starlette, same app otherwise."""
    for impl in ("plain (ours)", "sse-starlette"):
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            proc = start([sys.executable, __file__, "--serve-variant", impl.split()[0], "--port", str(port),
                          "--data-dir", tmp], dict(os.environ), port)
            try:
                r = asyncio.run(fanout(port, 100, events, 0.01))
            finally:
                stop(proc)
        print(f"{impl:14} event → 100 subscribers   p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms"
              f"   max {r['max']:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="load duration per row")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--events", type=int, default=100, help="events per fan-out row")
    parser.add_argument("--compare-sse", action="store_true", help="only compare SSE response implementations")
    parser.add_argument("--serve-variant", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_variant:
        serve_variant(args.serve_variant, args.port, args.data_dir)
        return
    if args.compare_sse:
        compare_sse(args.events)
        return
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENANALYST_")}
        env |= {"OPENANALYST_DATA_DIR": str(Path(tmp) / "data"), "OPENANALYST_ENABLE_TEST_HOOKS": "1",
                "OPENANALYST_LOG_LEVEL": "warning", "OPENANALYST_OWNER_WORKSPACE": str(Path(tmp) / "workspace"),
                "OPENANALYST_SANDBOX_LABELS": '{"openanalyst.test": "1"}',
                "OPENANALYST_MAX_SESSIONS_PER_TENANT": "10000000"}  # the POST /sessions load makes thousands
        (Path(tmp) / "hello.py").write_text(BASELINE_APP)
        (Path(tmp) / "workspace").mkdir()
        base_port, port = free_port(), free_port()
        baseline = start([sys.executable, "-m", "uvicorn", "--app-dir", tmp, "hello:app", "--port",
                          str(base_port), "--log-level", "warning", "--no-access-log"], env, base_port)
        server = start([str(bin_dir / "openanalyst"), "--serve", str(port)], env, port)
        rows: list[tuple[str, str]] = []
        try:
            for name, p, method, path in [("baseline: bare uvicorn ASGI hello", base_port, "GET", "/"),
                                          ("GET /health", port, "GET", "/health"),
                                          ("POST /sessions", port, "POST", "/sessions")]:
                r = asyncio.run(load(p, method, path, args.seconds, args.concurrency))
                rows.append((name, f"{r['rps']:8.0f} req/s   p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms"
                                   f"   (n={r['n']:.0f}, {args.concurrency} connections)"))
            for subs in (1, 10, 100):
                r = asyncio.run(fanout(port, subs, args.events, 0.01))
                rows.append((f"event → {subs} subscriber(s)",
                             f"p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms   max {r['max']:6.2f} ms"
                             f"   (n={r['n']:.0f} deliveries)"))
        finally:
            stop(server)
            stop(baseline)
        rows.append(("EventLog.append, in-process", append_rate(tmp)))
    width = max(len(n) for n, _ in rows)
    print(f"{'measure'.ljust(width)}   result   (cores: {os.cpu_count()})")
    print("-" * (width + 80))
    for name, value in rows:
        print(f"{name.ljust(width)}   {value}")


if __name__ == "__main__":
    main()
