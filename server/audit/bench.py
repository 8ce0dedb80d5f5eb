"""What the audit log costs a tool call: ``python -m server.audit.bench [--calls N] [--dir DIR] [--signing]``.

Prints one table: per-call latency (started + finished, awaited one after the other as the dispatcher does)
for a lone caller and for many concurrent callers, with ``synchronous=FULL`` (fsync per group commit) and
``NORMAL``; the baselines, measured in the same run on the same disk, are a bare fsync and a bare SQLite
INSERT + COMMIT.

``--signing`` prints what the Ed25519 signatures cost instead: one Ed25519 sign and one HMAC, bare, and the
per-call audit latency (``NORMAL``, one caller, the server's default) with the real Ed25519 head signature
against the same log whose heads are signed with an HMAC (the format-v1 cost; a bench-only stand-in), runs
interleaved so machine load hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from server.audit.log import AuditLog
from server.audit.signing import PublicKey, load_or_create

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


class _HmacSigner:
    """Bench-only stand-in for ``SigningKey``: an HMAC per head, what format v1 paid."""

    def __init__(self, public: PublicKey) -> None:
        self.public = public
        self._key = secrets.token_bytes(32)

    def sign(self, message: bytes) -> bytes:
        return hmac.new(self._key, message, hashlib.sha256).digest() * 2


async def _signing_round(directory: Path, name: str, calls: int, use_hmac: bool) -> list[float]:
    log = AuditLog(directory / f"{name}.db")
    await log.open()
    try:
        if use_hmac:
            writer = log._writer  # bench-only: swap the signer
            assert writer is not None
            writer._key = _HmacSigner(log.public_key)  # type: ignore[assignment]
        for n in range(20):
            await _one_call(log, "warmup", n)
        return [await _one_call(log, "t", n) for n in range(calls)]
    finally:
        await log.close()


def _bare(op: Callable[[], object], n: int = 5000) -> float:
    start = time.perf_counter()
    for _ in range(n):
        op()
    return (time.perf_counter() - start) / n


async def signing_main(calls: int, directory: Path) -> None:
    key = load_or_create(directory / "bench-signing.key", "openanalyst-audit")
    message = b"x" * 200
    mac_key = secrets.token_bytes(32)
    print(f"bare Ed25519 sign: {_bare(lambda: key.sign(message)) * 1e6:.1f} us   "
          f"bare HMAC-SHA256: {_bare(lambda: hmac.new(mac_key, message, hashlib.sha256).digest()) * 1e6:.1f} us")
    ed: list[float] = []
    mac: list[float] = []
    for round_ in range(4):  # interleaved, so load drifts hit both
        mac += await _signing_round(directory, f"hmac-{round_}", calls // 4, True)
        ed += await _signing_round(directory, f"ed25519-{round_}", calls // 4, False)
    print(f"{'per call (started + finished), NORMAL, 1 caller':<44} {'median ms':>9} {'p99 ms':>9}")
    print(_row("heads signed with HMAC (format v1 cost)", mac))
    print(_row("heads signed with Ed25519 (format v2)", ed))
    delta = statistics.median(ed) - statistics.median(mac)
    print(f"Ed25519 adds {delta * 1e3:.3f} ms to a call's median (two heads signed per call)")


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
    parser.add_argument("--signing", action="store_true", help="measure what the Ed25519 signatures cost")
    args = parser.parse_args()
    run = signing_main if args.signing else main_async
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args.calls, args.dir))
        return
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        asyncio.run(run(args.calls, Path(tmp)))


if __name__ == "__main__":
    main()
