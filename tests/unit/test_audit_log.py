"""AuditLog on a real SQLite file: every call recorded, chains valid, files private, writers concurrent."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.audit.log import AuditLog, AuditWriteError
from server.audit.records import genesis_hash, record_hash
from server.audit.verify import verify_lines
from server.audit.writer import Writer

pytestmark = pytest.mark.anyio

RESULT_OK = {
    "output": "hi\n",
    "exit_code": 0,
    "timed_out": False,
    "truncated": False,
    "duration_ms": 1.5,
    "limit": None,
    "error": None,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[AuditLog]:
    audit = AuditLog(tmp_path / "data" / "audit.db")
    await audit.open()
    yield audit
    await audit.close()


async def one_call(
    log: AuditLog,
    tenant: str,
    n: int,
    *,
    session: str = "s1",
    tool: str = "bash",
    decision: str = "allowed",
    result: dict[str, Any] | None = None,
) -> tuple[int, int]:
    common = {"call_id": f"call_{n}", "session_id": session, "tool": tool, "policy": "default", "decision": decision}
    first = await log.started(
        tenant, input={"command": f"echo {n}"}, reason="not allowed" if decision == "denied" else None, **common
    )
    last = await log.finished(
        tenant, result=result or RESULT_OK, oom_killed=False, container_id="c0ffee", image_id="sha256:abc", **common
    )
    return first, last


def stored(path: Path, tenant: str) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT body FROM records WHERE tenant = ? ORDER BY seq", (tenant,)).fetchall()
    return [json.loads(body) for (body,) in rows]


async def test_every_call_has_started_and_finished_records(log: AuditLog) -> None:
    """Each call, allowed or denied, leaves one started and one finished record with seqs 1, 2, 3, …"""
    seqs = [await one_call(log, "t1", n) for n in range(3)]
    seqs.append(
        await one_call(
            log,
            "t1",
            3,
            decision="denied",
            result={**RESULT_OK, "output": "", "error": {"code": "TOOL_DENIED", "message": "no"}},
        )
    )
    assert seqs == [(1, 2), (3, 4), (5, 6), (7, 8)]
    assert await log.count("t1", phase="finished") == 4
    assert await log.count("t1", phase="started") == 4
    assert await log.count("t1") == 8
    records = stored(log.path, "t1")
    denied = records[-2:]
    assert [r["decision"] for r in denied] == ["denied", "denied"]
    assert denied[0]["reason"] == "not allowed"
    assert denied[1]["error_code"] == "TOOL_DENIED"
    assert await log.verify("t1") == {"ok": True, "records": 8, "first_bad_seq": None, "reason": None}


async def test_records_chain_from_the_tenant_genesis(log: AuditLog) -> None:
    """Seq 1 links to the tenant's genesis hash and every later record to its predecessor's hash."""
    await one_call(log, "t1", 0)
    await one_call(log, "t1", 1)
    records = stored(log.path, "t1")
    assert records[0]["prev_hash"] == genesis_hash("t1")
    for before, after in itertools.pairwise(records):
        assert after["prev_hash"] == before["hash"]
    assert all(r["hash"] == record_hash(r) for r in records)
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    assert records[1]["output"] == "hi\n" and records[1]["exit_code"] == 0
    assert records[1]["duration_ms"] == 1.5


async def test_files_are_private_and_the_key_is_made_once(tmp_path: Path) -> None:
    """audit.db and the Ed25519 audit-signing.key are created mode 0600, and reopening keeps the same key and
    chain; no HMAC audit.key is made any more."""
    path = tmp_path / "audit.db"
    first = AuditLog(path)
    await first.open()
    await one_call(first, "t1", 0)
    key = (tmp_path / "audit-signing.key").read_text()
    await first.close()
    assert not (tmp_path / "audit.key").exists()
    for name in ("audit.db", "audit-signing.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    second = AuditLog(path)
    await second.open()
    try:
        assert (tmp_path / "audit-signing.key").read_text() == key
        assert await one_call(second, "t1", 1) == (3, 4)
        assert second.warnings == []
        assert (await second.verify("t1"))["ok"] is True
    finally:
        await second.close()


async def test_concurrent_writers_across_tenants_get_contiguous_chains(log: AuditLog) -> None:
    """Many asyncio tasks writing for several tenants at once get gap-free seqs and valid chains each."""
    tenants = [f"tenant-{i}" for i in range(5)]
    order = [t for _ in range(40) for t in tenants]
    results = await asyncio.gather(*(one_call(log, t, n) for n, t in enumerate(order)))
    for tenant in tenants:
        mine = sorted(seq for t, pair in zip(order, results, strict=True) if t == tenant for seq in pair)
        assert mine == list(range(1, 81))
        assert await log.verify(tenant) == {"ok": True, "records": 80, "first_bad_seq": None, "reason": None}
        assert await log.count(tenant, phase="finished") == 40
    writer = log._writer
    assert writer is not None and writer.commits < len(order) * 2  # group commit actually grouped


async def test_a_cancelled_caller_still_gets_its_record_written(log: AuditLog) -> None:
    """Cancelling the task that awaits a record does not lose the record (it is already queued)."""
    task = asyncio.create_task(
        log.started("t1", call_id="c", session_id=None, tool="bash", input={}, policy="default", decision="allowed")
    )
    await asyncio.sleep(0)  # one loop turn: the task runs up to awaiting its queued record
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await one_call(log, "t1", 1)
    assert await log.count("t1") == 3
    assert (await log.verify("t1"))["ok"] is True


async def test_close_writes_everything_already_submitted(tmp_path: Path) -> None:
    """Records submitted before close are committed by it, and writing after close is refused clearly."""
    audit = AuditLog(tmp_path / "audit.db")
    await audit.open()
    pending = [asyncio.ensure_future(one_call(audit, "t1", n)) for n in range(20)]
    await asyncio.gather(*pending)
    await audit.close()
    assert len(stored(tmp_path / "audit.db", "t1")) == 40
    with pytest.raises(AuditWriteError):
        await one_call(audit, "t1", 99)


async def test_big_input_and_output_are_capped_but_hashed_whole(log: AuditLog) -> None:
    """A huge input/output is stored capped (flagged) while its sha256 covers the full value."""
    big = "x" * (5 * 1024 * 1024)
    await log.started(
        "t1",
        call_id="c",
        session_id="s",
        tool="write_file",
        input={"content": big},
        policy="default",
        decision="allowed",
    )
    await log.finished(
        "t1",
        call_id="c",
        session_id="s",
        tool="write_file",
        result={**RESULT_OK, "output": big},
        oom_killed=False,
        container_id=None,
        image_id=None,
        policy="default",
        decision="allowed",
    )
    started, finished = stored(log.path, "t1")
    assert started["input_truncated"] is True and isinstance(started["input"], str)
    assert len(started["input"].encode()) <= 16 * 1024
    assert finished["output_truncated"] is True and len(finished["output"]) == 16 * 1024
    assert finished["output_sha256"] == hashlib.sha256(big.encode()).hexdigest()
    assert (await log.verify("t1"))["ok"] is True


async def test_a_failed_commit_fails_the_callers_and_the_log_recovers(log: AuditLog) -> None:
    """When SQLite refuses a write the awaiting callers get AuditWriteError and the chain is unharmed."""
    await one_call(log, "t1", 0)
    with sqlite3.connect(log.path) as conn:  # a trigger stands in for a full disk
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(AuditWriteError, match="disk full"):
        await one_call(log, "t1", 1)
    with sqlite3.connect(log.path) as conn:
        conn.execute("DROP TRIGGER refuse")
    assert await one_call(log, "t1", 2) == (3, 4)
    assert (await log.verify("t1"))["ok"] is True


async def test_reopen_after_tail_removal_keeps_the_gap_visible(tmp_path: Path) -> None:
    """After the tail is deleted, the writer continues from the signed head, so verify still fails there."""
    path = tmp_path / "audit.db"
    audit = AuditLog(path)
    await audit.open()
    for n in range(3):
        await one_call(audit, "t1", n)
    await audit.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM records WHERE tenant = 't1' AND seq >= 5")
    audit = AuditLog(path)
    await audit.open()
    try:
        assert any("records 5..6 missing" in w for w in audit.warnings)
        assert await one_call(audit, "t1", 3) == (7, 8)
        verdict = await audit.verify("t1")
        assert verdict["ok"] is False and verdict["first_bad_seq"] == 5
    finally:
        await audit.close()


def test_writer_refuses_submissions_before_start(tmp_path: Path) -> None:
    """A writer that is not running raises instead of queueing a record nobody will write."""
    writer = Writer(tmp_path / "audit.db", b"k" * 32)

    async def submit() -> None:
        writer.submit("t1", {})

    with pytest.raises(AuditWriteError):
        asyncio.run(submit())


CRASH_WRITER = """
import asyncio, sys
from pathlib import Path
from server.audit.log import AuditLog

async def main():
    log = AuditLog(Path(sys.argv[1]))
    await log.open()
    n = 0
    while True:
        n += 1
        seq = await log.started("t1", call_id=f"c{n}", session_id="s", tool="bash", input={"n": n},
                                policy="default", decision="allowed")
        print(seq, flush=True)

asyncio.run(main())
"""


@pytest.mark.timeout(60)
async def test_records_acknowledged_before_a_kill_survive_it(tmp_path: Path) -> None:
    """Every seq a writer saw acknowledged is still there after the process is SIGKILLed mid-stream."""
    path = tmp_path / "audit.db"
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    acknowledged = 0
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acknowledged = int(line)
            if acknowledged >= 300:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert acknowledged >= 300
    audit = AuditLog(path)
    await audit.open()
    try:
        assert audit.warnings == []
        kept = await audit.count("t1")
        assert kept >= acknowledged
        verdict = await audit.verify("t1")
        assert verdict == {"ok": True, "records": kept, "first_bad_seq": None, "reason": None}
    finally:
        await audit.close()


async def test_export_taken_during_writes_ends_at_its_head(log: AuditLog) -> None:
    """An export read while calls keep being recorded is a consistent prefix that verifies with the key."""
    for n in range(50):
        await one_call(log, "t1", n)
    export = log.iter_export("t1")
    first = [next(export), next(export)]  # the export has begun: its head is fixed
    writers = asyncio.gather(*(one_call(log, "t1", n) for n in range(50, 150)))
    rest = await asyncio.to_thread(list, export)
    await writers
    lines = first + rest
    verdict = verify_lines(lines, log.public_key)
    assert verdict.ok and verdict.tail_authenticated and verdict.records == json.loads(lines[-1])["seq"]
    assert verdict.records >= 100
    assert await log.count("t1") == 300


async def test_verify_while_calls_are_recorded_is_never_a_false_alarm(log: AuditLog) -> None:
    """verify reads records and head from one snapshot, so concurrent writes never look like tampering."""
    writers = asyncio.gather(*(one_call(log, "t1", n) for n in range(300)))
    verdicts = []
    while not writers.done():
        verdicts.append(await log.verify("t1"))
    await writers
    verdicts.append(await log.verify("t1"))
    assert len(verdicts) >= 2
    assert all(v["ok"] for v in verdicts), [v for v in verdicts if not v["ok"]]
    assert verdicts[-1]["records"] == 600


async def test_wal_is_checkpointed_in_the_background(log: AuditLog) -> None:
    """With automatic checkpoints off the write path, the background thread still moves records into the db file."""
    size_before = log.path.stat().st_size
    for n in range(200):
        await one_call(log, "t1", n)
    writer = log._writer
    assert writer is not None
    target = writer._checkpointer.runs + 2  # one full round after the writes above
    deadline = asyncio.get_running_loop().time() + 10
    while writer._checkpointer.runs < target:
        assert asyncio.get_running_loop().time() < deadline, "no checkpoint ran"
        await asyncio.sleep(0.05)
    assert log.path.stat().st_size > size_before + 200 * 1000
