"""Streaming overhead: a fake Anthropic provider streams N text deltas as fast as it can; the same stream is
received (1) raw by an HTTP client, (2) through our Anthropic adapter and the failover router, (3) through
the server's ``POST /v1/chat`` (``openanalyst --serve PORT`` as a subprocess pointed at the fake). One run; prints
median time to first delta, total time, throughput, and the server's added TTFB and throughput ratio.

    .venv/bin/python bench/stream.py [--deltas 10000] [--runs 5] [--no-server]

Targets: the server adds ≤ 5 ms to time-to-first-delta and keeps ≥ 0.8 of the direct throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.providers.anthropic import AnthropicAdapter  # noqa: E402
from server.providers.config import RouterConfig  # noqa: E402
from server.providers.credentials import ProviderCredential, StaticCredentials  # noqa: E402
from server.providers.failover import ProviderRouter  # noqa: E402
from server.providers.types import ChatRequest, Message, TextBlock, TextDelta  # noqa: E402

PIECE = "tok "
KEY = "sk-bench-not-a-real-key"
PROVIDER_VARS = ("ANTHROPIC_", "OPENAI_", "GEMINI_", "GOOGLE_API_KEY", "XAI_", "OPENROUTER_", "OPENANALYST_",
                 "AWS_", "OLLAMA_", "BEDROCK_")

Measure = Callable[[], Awaitable[tuple[float, float, int]]]  # → (ttfb_s, total_s, chars)


@contextlib.contextmanager
def fake_provider(deltas: int) -> Iterator[str]:
    """The fake in its own process, so it does not share a GIL with the clients being measured."""
    cmd = [sys.executable, "-m", "tests.fakes", "anthropic", "--deltas", str(deltas), "--piece", PIECE]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"fake provider did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(fake_url: str, template: str | None) -> Iterator[str]:
    """``openanalyst --serve PORT`` (or ``template`` with {port}) with only the fake configured and a
    throwaway data dir."""
    port = free_port()
    exe = shutil.which("openanalyst", path=str(Path(sys.executable).parent)) or shutil.which("openanalyst")
    cmd = [exe, "--serve", str(port)] if exe else [sys.executable, "-m", "server.cli", "--serve", str(port)]
    if template:
        cmd = shlex.split(template.format(port=port))
    env = {k: v for k, v in os.environ.items() if not k.startswith(PROVIDER_VARS)}
    with tempfile.TemporaryDirectory() as tmp:
        data, workspace = Path(tmp) / "data", Path(tmp) / "workspace"
        workspace.mkdir()  # the owner's workspace must not overlap the data directory
        env.update(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=fake_url, OPENANALYST_DATA_DIR=str(data),
                   OPENANALYST_OWNER_WORKSPACE=str(workspace), OPENANALYST_LOG_LEVEL="warning")
        log = open(Path(tmp) / "server.log", "w+")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    tail = log.read()[-600:].strip().replace("\n", " | ")
                    raise RuntimeError(f"server exited with {proc.returncode}: {tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("server not healthy within 60 s")
                time.sleep(0.1)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()


def raw(client: httpx.AsyncClient, fake_url: str) -> Measure:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": True,
            "messages": [{"role": "user", "content": "bench"}]}

    async def go() -> tuple[float, float, int]:
        start = time.perf_counter()
        first, chars = 0.0, 0
        async with client.stream("POST", fake_url + "/v1/messages", json=body,
                                 headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and '"text_delta"' in line:
                    chars += len(json.loads(line[6:])["delta"]["text"])
                    first = first or time.perf_counter() - start
        return first, time.perf_counter() - start, chars
    return go


def adapter(client: httpx.AsyncClient, fake_url: str) -> Measure:
    ad = AnthropicAdapter("anthropic", client, ProviderCredential("anthropic", KEY, fake_url), fake_url)
    question = Message(role="user", blocks=[TextBlock(text="bench")])
    req = ChatRequest(model="claude-sonnet-4-5", messages=[question])

    async def go() -> tuple[float, float, int]:
        start = time.perf_counter()
        first, chars = 0.0, 0
        async for event in ad.stream(req):
            if isinstance(event, TextDelta):
                chars += len(event.text)
                first = first or time.perf_counter() - start
        return first, time.perf_counter() - start, chars
    return go


def router(client: httpx.AsyncClient, fake_url: str) -> Measure:
    lookup = StaticCredentials([ProviderCredential("anthropic", KEY, fake_url)])
    rt = ProviderRouter(RouterConfig(), client, lookup)
    question = Message(role="user", blocks=[TextBlock(text="bench")])
    req = ChatRequest(model="claude-sonnet-4-5", messages=[question])

    async def go() -> tuple[float, float, int]:
        start = time.perf_counter()
        first, chars = 0.0, 0
        async for event in rt.stream("bench", req):
            if isinstance(event, TextDelta):
                chars += len(event.text)
                first = first or time.perf_counter() - start
        return first, time.perf_counter() - start, chars
    return go


def through_server(client: httpx.AsyncClient, base: str) -> Measure:
    async def go() -> tuple[float, float, int]:
        start = time.perf_counter()
        first, chars, event = 0.0, 0, ""
        async with client.stream("POST", base + "/v1/chat",
                                 json={"message": "bench", "model": "claude-sonnet-4-5"}) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"/v1/chat answered {resp.status_code}: {(await resp.aread())[:300]!r}")
            async for line in resp.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and "delta" in event:
                    text = json.loads(line[5:]).get("text")
                    if text:
                        chars += len(text)
                        first = first or time.perf_counter() - start
                elif line.startswith("data:") and event == "error":
                    raise RuntimeError(f"/v1/chat streamed an error: {line[5:200]}")
        return first, time.perf_counter() - start, chars
    return go


async def measure(fn: Measure, runs: int, expect: int) -> tuple[float, float]:
    await fn()  # warm-up (connections, imports, first-request paths)
    ttfbs, totals = [], []
    for _ in range(runs):
        ttfb, total, chars = await fn()
        if chars != expect:
            raise RuntimeError(f"received {chars} characters of text, expected {expect}")
        ttfbs.append(ttfb)
        totals.append(total)
    return statistics.median(ttfbs), statistics.median(totals)


async def main(args: argparse.Namespace) -> None:
    expect = args.deltas * len(PIECE)
    rows: dict[str, tuple[float, float] | str] = {}
    with fake_provider(args.deltas) as fake_url:
        async with httpx.AsyncClient(timeout=120) as client:
            rows["direct: raw HTTP client"] = await measure(raw(client, fake_url), args.runs, expect)
            rows["direct: Anthropic adapter"] = await measure(adapter(client, fake_url), args.runs, expect)
            rows["direct: ProviderRouter"] = await measure(router(client, fake_url), args.runs, expect)
            if args.no_server:
                rows["server: POST /v1/chat"] = "skipped (--no-server)"
            else:
                try:
                    with server(fake_url, args.server_cmd) as base:
                        rows["server: POST /v1/chat"] = await measure(through_server(client, base), args.runs,
                                                                      expect)
                except Exception as exc:
                    rows["server: POST /v1/chat"] = f"unavailable: {exc}"[:300]
    report(rows, args)


def report(rows: dict[str, tuple[float, float] | str], args: argparse.Namespace) -> None:
    print(f"\nstream benchmark: {args.deltas:,} text deltas, median of {args.runs} runs (after a warm-up)\n")
    print(f"{'path':<28}{'TTFB ms':>10}{'total ms':>11}{'deltas/s':>12}")
    for name, value in rows.items():
        if isinstance(value, str):
            print(f"{name:<28}  {value}")
        else:
            ttfb_ms, total_ms, rate = value[0] * 1000, value[1] * 1000, args.deltas / value[1]
            print(f"{name:<28}{ttfb_ms:>10.2f}{total_ms:>11.1f}{rate:>12,.0f}")
    direct, srv = rows["direct: raw HTTP client"], rows["server: POST /v1/chat"]
    if isinstance(direct, tuple) and isinstance(srv, tuple):
        added = (srv[0] - direct[0]) * 1000
        ratio = direct[1] / srv[1]
        print(f"\nserver added TTFB: {added:.2f} ms (target <= 5 ms) {'OK' if added <= 5 else 'MISSED'}")
        print(f"server/direct throughput: {ratio:.2f} (target >= 0.8) {'OK' if ratio >= 0.8 else 'MISSED'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deltas", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-server", action="store_true", help="measure the direct paths only")
    parser.add_argument("--server-cmd", help="start the server with this command instead ({port} is replaced)")
    asyncio.run(main(parser.parse_args()))
