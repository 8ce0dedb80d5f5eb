"""What the audit log costs a tool call: ``python -m server.audit.bench [--calls N] [--dir DIR]``.

Prints one table: per-call latency (started + finished, awaited one after the other as the dispatcher does)
for a lone caller and for many concurrent callers, with ``synchronous=FULL`` (fsync per group commit) and
``NORMAL``; the baselines, measured in the same run on the same disk, are a bare fsync and a bare SQLite
INSERT + COMMIT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from server.audit.log import AuditLog

RESULT = {"output": "hello\n" * 20, "exit_code": 0, "timed_out": False, "truncated": False,
          "duration_ms": 0.9, "limit": None, "error": None}


def _row(name: str, samples: list[float], calls_per_s: float | None = None) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    rate = f"{calls_per_s:10.0f}" if calls_per_s is not None else " " * 10
    return f"{name:<44} {statistics.median(ordered) * 1e3:9.3f} {p99 * 1e3:9.3f} {rate}"


def _baseline(directory: Path, label: str, op: Callable[[int], None], n: int) -> str:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        op(i)
        samples.append(time.perf_counter() - start)
    return _row(label, samples)


def baselines(directory: Path, n: int) -> list[str]:
    fd = os.open(directory / "fsync.bin", os.O_CREAT | os.O_WRONLY, 0o600)

    def fsync(_: int) -> None:
        os.write(fd, b"x" * 512)
        os.fsync(fd)

    conn = sqlite3.connect(directory / "bare.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")

    def insert(i: int) -> None:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?, ?)", (i, "x" * 900))
        conn.execute("COMMIT")

    try:
        return [_baseline(directory, "baseline: write + fsync", fsync, n),
                _baseline(directory, "baseline: sqlite INSERT+COMMIT (FULL)", insert, n)]
    finally:
        os.close(fd)
        conn.close()


async def _one_call(log: AuditLog, tenant: str, n: int) -> float:
    common = {"call_id": f"call_{n}", "session_id": "s1", "tool": "bash", "policy": "default",
              "decision": "allowed"}
    start = time.perf_counter()
    await log.started(tenant, input={"command": f"echo {n}", "timeout_s": 30}, **common)
    await log.finished(tenant, result=RESULT, oom_killed=False, container_id="c" * 64,
                       image_id="sha256:" + "a" * 64, **common)
    return time.perf_counter() - start


async def measure(directory: Path, sync: Literal["FULL", "NORMAL"], calls: int, concurrency: int) -> str:
    log = AuditLog(directory / f"audit-{sync}-{concurrency}.db", synchronous=sync)
    await log.open()
    try:
        for n in range(50):  # warm up
            await _one_call(log, "warmup", n)
        samples: list[float] = []

        async def worker(w: int) -> None:
            for n in range(w, calls, concurrency):
                samples.append(await _one_call(log, f"tenant-{w % 4}", n))

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - start
        for t in range(min(concurrency, 4)):
            assert (await log.verify(f"tenant-{t}"))["ok"]
    finally:
        await log.close()
    return _row(f"audit {sync:<6} {concurrency:>3} concurrent caller(s)", samples, calls / elapsed)


async def main_async(calls: int, directory: Path) -> None:
    print(f"{'per call (started + finished)':<44} {'median ms':>9} {'p99 ms':>9} {'calls/s':>10}")
    for line in baselines(directory, 500):
        print(line)
    modes: tuple[Literal["FULL", "NORMAL"], ...] = ("FULL", "NORMAL")
    for sync in modes:
        for concurrency in (1, 16, 64):
            print(await measure(directory, sync, calls, concurrency))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to put the databases (default: a temp dir)")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(main_async(args.calls, args.dir))
        return
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        asyncio.run(main_async(args.calls, Path(tmp)))


if __name__ == "__main__":
    main()
