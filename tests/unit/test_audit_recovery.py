"""Reopening a tampered audit.db: writes keep working, and the damage stays reported by verify."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from server.audit.log import AuditLog
from server.audit.records import canonical_json, record_hash

pytestmark = pytest.mark.anyio

RESULT = {"output": "ok", "exit_code": 0, "duration_ms": 1.0}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def write_calls(path: Path, first: int, count: int) -> list[int]:
    audit = AuditLog(path)
    await audit.open()
    seqs: list[int] = []
    try:
        for n in range(first, first + count):
            common = {"call_id": f"c{n}", "session_id": "s", "tool": "bash", "policy": "default",
                      "decision": "allowed"}
            seqs.append(await audit.started("t1", input={"n": n}, **common))
            seqs.append(await audit.finished("t1", result=RESULT, oom_killed=False, container_id=None,
                                             image_id=None, **common))
    finally:
        await audit.close()
    return seqs


async def reopen(path: Path) -> tuple[AuditLog, dict[str, object]]:
    audit = AuditLog(path)
    await audit.open()
    return audit, await audit.verify("t1")


async def test_records_planted_past_the_head_are_quarantined(tmp_path: Path) -> None:
    """A record appended without the key is moved aside at open, its seq is reused, and verify flags it."""
    path = tmp_path / "audit.db"
    await write_calls(path, 0, 3)
    with sqlite3.connect(path) as conn:
        last = json.loads(conn.execute("SELECT body FROM records WHERE seq = 6").fetchone()[0])
        planted = dict(last, seq=7, prev_hash=last["hash"], output="planted")
        planted["hash"] = record_hash(planted)
        conn.execute("INSERT INTO records (tenant, seq, ts, session_id, call_id, phase, tool, decision, hash, "
                     "body) VALUES ('t1', 7, ?, 's', 'c2', 'finished', 'bash', 'allowed', ?, ?)",
                     (planted["ts"], planted["hash"], canonical_json(planted).decode()))
    assert await write_calls(path, 3, 1) == [7, 8]  # writes go on, over the freed seq
    audit, verdict = await reopen(path)
    try:
        assert verdict["ok"] is False and verdict["first_bad_seq"] == 7
        assert "quarantine" in str(verdict["reason"])
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT seq FROM quarantine").fetchall() == [(7,)]
        assert await audit.count("t1") == 8
    finally:
        await audit.close()


async def test_a_deleted_head_is_not_silently_resealed(tmp_path: Path) -> None:
    """Deleting a tenant's head row (and its tail) leaves an incident that verify keeps reporting."""
    path = tmp_path / "audit.db"
    await write_calls(path, 0, 3)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM records WHERE seq > 4")
        conn.execute("DELETE FROM heads")
    assert await write_calls(path, 3, 1) == [5, 6]
    audit, verdict = await reopen(path)
    try:
        assert audit.warnings == []  # the log itself is consistent again ...
        assert verdict["ok"] is False and verdict["first_bad_seq"] == 5  # ... but the incident stays
        assert "signed head missing" in str(verdict["reason"])
    finally:
        await audit.close()


async def test_a_replaced_key_is_reported_for_every_tenant_chain(tmp_path: Path) -> None:
    """If the signing key is replaced, the old heads no longer verify: reported, and writing still works."""
    path = tmp_path / "audit.db"
    await write_calls(path, 0, 2)
    (tmp_path / "audit-signing.key").unlink()
    assert await write_calls(path, 2, 1) == [5, 6]
    audit, verdict = await reopen(path)
    try:
        assert verdict["ok"] is False and verdict["first_bad_seq"] == 5
        assert "invalid" in str(verdict["reason"])
    finally:
        await audit.close()


async def test_an_untouched_log_reopens_without_incidents(tmp_path: Path) -> None:
    """Opening and closing a healthy log many times records no incident and keeps one chain."""
    path = tmp_path / "audit.db"
    for round_ in range(3):
        await write_calls(path, round_, 1)
    audit, verdict = await reopen(path)
    try:
        assert audit.warnings == []
        assert verdict == {"ok": True, "records": 6, "first_bad_seq": None, "reason": None}
    finally:
        await audit.close()
