"""Latency of runner tool calls over pipes on the host, measured in one run; prints one table.

    .venv/bin/python bench/runner.py [--n 300]

The runner runs as a subprocess (``python3 -I -m toolrunner.runner``) reached through the real RunnerChannel,
as the unit tests do. Rows: bash ``true``, bash ``echo $X`` with an exported X, read_file, and the host
baseline ``subprocess.run(["bash", "-c", "true"])`` (what one fresh shell per call costs at least).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolrunner.local import start_local_runner  # noqa: E402

ROWS: list[tuple[str, int, float, float]] = []


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, samples_s: list[float]) -> None:
    ms = [s * 1000 for s in samples_s]
    ROWS.append((name, len(ms), statistics.median(ms), pct(ms, 0.99)))


async def timed(n: int, fn: Callable[[], Awaitable[None]]) -> list[float]:
    for _ in range(min(10, n)):  # warm-up: the session's shell starts on its first call
        await fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t)
    return samples


async def bench(n: int, ws: Path) -> None:
    local = await start_local_runner(ws)
    channel = local.channel
    (ws / "f.txt").write_text("hello\n" * 20)

    async def call(session: str, tool: str, inp: dict[str, object], expect: str | None = None) -> None:
        r = await channel.call(session, tool, inp, timeout_s=30, output_cap=65536)
        if r.error is not None or (expect is not None and r.output != expect):
            raise SystemExit(f"{tool} {inp} failed: {r}")

    try:
        row("runner bash true", await timed(n, lambda: call("a", "bash", {"command": "true"}, "")))
        await call("b", "bash", {"command": "export X=hello"})
        row("runner bash echo $X", await timed(n, lambda: call("b", "bash", {"command": "echo $X"}, "hello\n")))
        row("runner read_file", await timed(n, lambda: call("c", "read_file", {"path": "f.txt"})))
    finally:
        await local.stop()


def host_bash(n: int) -> None:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["bash", "-c", "true"], check=True)
        samples.append(time.perf_counter() - t)
    row("host subprocess.run(['bash','-c','true'])", samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="timed calls per row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(args.n, Path(tmp)))
    host_bash(args.n)
    width = max(len(r[0]) for r in ROWS)
    print(f"{'row':<{width}}  {'n':>5}  {'median ms':>10}  {'p99 ms':>8}")
    for name, count, median, p99 in ROWS:
        print(f"{name:<{width}}  {count:>5}  {median:>10.3f}  {p99:>8.3f}")


if __name__ == "__main__":
    main()
