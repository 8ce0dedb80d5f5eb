"""Tampering with the audit log — in the SQLite file and in an export — is caught at the right seq."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from server.audit.db import AuditFilter
from server.audit.log import AuditLog
from server.audit.merkle import Frontier, leaf_hash
from server.audit.records import canonical_json, record_hash
from server.audit.signing import load_or_create
from server.audit.verify import verify_lines

pytestmark = pytest.mark.anyio

CALLS = 3  # records 1..6 for tenant t1
INSERT_COLUMNS = "tenant, seq, ts, session_id, call_id, phase, tool, decision, hash, body"
RESULT = {
    "output": "ok",
    "exit_code": 0,
    "timed_out": False,
    "truncated": False,
    "duration_ms": 2.0,
    "limit": None,
    "error": None,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[AuditLog]:
    audit = AuditLog(tmp_path / "audit.db")
    await audit.open()
    for tenant in ("t1", "t2"):
        for n in range(CALLS):
            common = {
                "call_id": f"call_{n}",
                "session_id": "s1",
                "tool": "bash",
                "policy": "default",
                "decision": "allowed",
            }
            await audit.started(tenant, input={"command": f"echo {n}"}, **common)
            await audit.finished(tenant, result=RESULT, oom_killed=False, container_id="c", image_id="i", **common)
    yield audit
    await audit.close()


def body(conn: sqlite3.Connection, seq: int) -> dict[str, Any]:
    row = conn.execute("SELECT body FROM records WHERE tenant = 't1' AND seq = ?", (seq,)).fetchone()
    return dict(json.loads(row[0]))


def put(conn: sqlite3.Connection, seq: int, record: dict[str, Any], *, rehash: bool) -> None:
    if rehash:
        record["hash"] = record_hash(record)
    conn.execute(
        "UPDATE records SET body = ?, hash = ? WHERE tenant = 't1' AND seq = ?",
        (canonical_json(record).decode(), record["hash"], seq),
    )


async def tampered(log: AuditLog, change: Callable[[sqlite3.Connection], None]) -> dict[str, Any]:
    assert (await log.verify("t1"))["ok"] is True
    with sqlite3.connect(log.path) as conn:
        change(conn)
    assert (await log.verify("t2"))["ok"] is True  # the other tenant's chain is untouched
    return await log.verify("t1")


def edit_body(conn: sqlite3.Connection) -> None:
    record = body(conn, 4)
    record["output"] = "nothing to see"
    put(conn, 4, record, rehash=False)


def edit_column(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE records SET tool = 'read_file' WHERE tenant = 't1' AND seq = 3")


def forge_middle(conn: sqlite3.Connection) -> None:
    record = body(conn, 3)
    record["input"] = {"command": "harmless"}
    put(conn, 3, record, rehash=True)


def forge_last(conn: sqlite3.Connection) -> None:
    record = body(conn, 6)
    record["exit_code"] = 1
    put(conn, 6, record, rehash=True)


def swap(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE records SET seq = -1 WHERE tenant = 't1' AND seq = 3")
    conn.execute("UPDATE records SET seq = 3 WHERE tenant = 't1' AND seq = 4")
    conn.execute("UPDATE records SET seq = 4 WHERE tenant = 't1' AND seq = -1")


def _shift_up_from(conn: sqlite3.Connection, seq: int) -> None:
    conn.execute("UPDATE records SET seq = seq + 1000 WHERE tenant = 't1' AND seq >= ?", (seq,))
    conn.execute("UPDATE records SET seq = seq - 999 WHERE tenant = 't1' AND seq >= 1000")


def insert_copy(conn: sqlite3.Connection) -> None:
    copy = body(conn, 2)
    _shift_up_from(conn, 4)
    conn.execute(
        f"INSERT INTO records ({INSERT_COLUMNS}) VALUES ('t1', 4, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            copy["ts"],
            copy["session_id"],
            copy["call_id"],
            copy["phase"],
            copy["tool"],
            copy["decision"],
            copy["hash"],
            canonical_json(copy).decode(),
        ),
    )


def insert_forged(conn: sqlite3.Connection) -> None:
    forged = body(conn, 4)
    forged.update(prev_hash=body(conn, 3)["hash"], output="forged", seq=4)
    forged["hash"] = record_hash(forged)
    _shift_up_from(conn, 4)
    conn.execute(
        f"INSERT INTO records ({INSERT_COLUMNS}) VALUES ('t1', 4, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            forged["ts"],
            forged["session_id"],
            forged["call_id"],
            forged["phase"],
            forged["tool"],
            forged["decision"],
            forged["hash"],
            canonical_json(forged).decode(),
        ),
    )


def append_forged(conn: sqlite3.Connection) -> None:
    last = body(conn, 6)
    extra = dict(last, seq=7, prev_hash=last["hash"], phase="started", input={"command": "planted"})
    extra["hash"] = record_hash(extra)
    conn.execute(
        f"INSERT INTO records ({INSERT_COLUMNS}) "
        "VALUES ('t1', 7, ?, 's1', 'call_x', 'started', 'bash', 'allowed', ?, ?)",
        (extra["ts"], extra["hash"], canonical_json(extra).decode()),
    )


def forge_head(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM records WHERE tenant = 't1' AND seq > 4")
    conn.execute("UPDATE heads SET seq = 4, hash = ?, mac = ? WHERE tenant = 't1'", (body(conn, 4)["hash"], "0" * 64))


CASES: list[tuple[str, Callable[[sqlite3.Connection], None], int]] = [
    ("edited field", edit_body, 4),
    ("edited index column", edit_column, 3),
    ("removed middle record", lambda c: c.execute("DELETE FROM records WHERE tenant='t1' AND seq=3"), 3),
    ("removed tail", lambda c: c.execute("DELETE FROM records WHERE tenant='t1' AND seq>=5"), 5),
    ("removed everything", lambda c: c.execute("DELETE FROM records WHERE tenant='t1'"), 1),
    ("removed head", lambda c: c.execute("DELETE FROM heads WHERE tenant='t1'"), 7),
    ("inserted copy", insert_copy, 4),
    ("inserted forgery", insert_forged, 5),
    ("appended forgery", append_forged, 7),
    ("swapped records", swap, 3),
    ("recomputed-hash forgery in the middle", forge_middle, 4),
    ("recomputed-hash forgery of the last record", forge_last, 6),
    ("truncated tail with a forged head", forge_head, 5),
]


@pytest.mark.parametrize(("name", "change", "first_bad"), CASES, ids=[c[0] for c in CASES])
async def test_database_tampering_is_caught(
    log: AuditLog, name: str, change: Callable[[sqlite3.Connection], None], first_bad: int
) -> None:
    """Each kind of edit to audit.db makes verify fail with first_bad_seq at the first unprovable record."""
    verdict = await tampered(log, change)
    assert verdict["ok"] is False, name
    assert verdict["first_bad_seq"] == first_bad, verdict
    assert verdict["reason"]


# -- the same, on an export file -------------------------------------------------------------------------


def export_lines(log: AuditLog) -> list[str]:
    return list(log.iter_export("t1"))


def edit_line(lines: list[str], seq: int, rehash: bool, **changes: Any) -> None:
    record = json.loads(lines[seq])  # line 0 is the export header, so record n is line n
    record.update(changes)
    if rehash:
        record["hash"] = record_hash(record)
    lines[seq] = canonical_json(record).decode() + "\n"


def _edit(lines: list[str]) -> None:
    edit_line(lines, 2, False, exit_code=7)


def _forge(lines: list[str]) -> None:
    edit_line(lines, 2, True, exit_code=7)


def _remove_middle(lines: list[str]) -> None:
    del lines[3]


def _remove_tail(lines: list[str]) -> None:
    del lines[5:7]


def _cut_off(lines: list[str]) -> None:
    del lines[5:]


def _insert(lines: list[str]) -> None:
    lines.insert(4, lines[1])


def _swap(lines: list[str]) -> None:
    lines[3], lines[4] = lines[4], lines[3]


def _garbage(lines: list[str]) -> None:
    lines[2] = "{not json\n"


def _nan(lines: list[str]) -> None:
    lines[2] = lines[2].replace('"duration_ms":2.0', '"duration_ms":NaN')


def _array(lines: list[str]) -> None:
    lines[2] = "[1, 2]\n"


def _after_head(lines: list[str]) -> None:
    lines.append(lines[1])


EXPORT_CASES: list[tuple[str, Callable[[list[str]], None], int]] = [
    ("edited field", _edit, 2),
    ("recomputed-hash forgery", _forge, 3),
    ("removed middle record", _remove_middle, 3),
    ("removed tail, head kept", _remove_tail, 5),
    ("cut off with its head", _cut_off, 5),
    ("inserted record", _insert, 4),
    ("swapped records", _swap, 3),
    ("a line that is not JSON", _garbage, 2),
    ("a NaN value", _nan, 2),
    ("a line that is not an object", _array, 2),
    ("data after the head", _after_head, 7),
]


@pytest.mark.parametrize(("name", "change", "first_bad"), EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
async def test_export_tampering_is_caught(
    log: AuditLog, name: str, change: Callable[[list[str]], None], first_bad: int
) -> None:
    """Each kind of edit to an export file fails offline verification at the right seq, keyed or not."""
    lines = export_lines(log)
    key = log.public_key
    assert verify_lines(lines, key).ok
    change(lines)
    for k in (None, key):
        verdict = verify_lines(lines, k)
        assert not verdict.ok, name
        assert verdict.first_bad_seq == first_bad, verdict


async def test_rewritten_head_passes_only_without_the_key(log: AuditLog) -> None:
    """A truncated export with a rewritten head fools only a keyless check, which calls it unauthenticated."""
    lines = export_lines(log)
    head = json.loads(lines[-1])
    frontier = Frontier()
    for line in lines[1:5]:
        frontier.append(leaf_hash(json.loads(line)["hash"]))
    head.update(seq=4, hash=json.loads(lines[4])["hash"], root=base64.b64encode(frontier.root()).decode())
    truncated = [*lines[:5], json.dumps(head) + "\n"]
    keyless = verify_lines(truncated)
    assert keyless.ok and not keyless.tail_authenticated and "unauthenticated" in (keyless.reason or "")
    keyed = verify_lines(truncated, log.public_key)
    assert not keyed.ok and keyed.first_bad_seq == 5 and "signature" in (keyed.reason or "")


async def test_another_public_key_rejects_the_head(log: AuditLog, tmp_path: Path) -> None:
    """Checked with a public key other than the signer's, the head is rejected; an HMAC key cannot check a
    format-v2 export at all (inconclusive, not a pass)."""
    other = load_or_create(tmp_path / "other.key", "openanalyst-audit").public
    verdict = verify_lines(export_lines(log), other)
    assert not verdict.ok and not verdict.inconclusive and "signature invalid" in (verdict.reason or "")
    hmac_keyed = verify_lines(export_lines(log), b"\x01" * 32)
    assert not hmac_keyed.ok and hmac_keyed.inconclusive and "--public-key" in (hmac_keyed.reason or "")


async def test_filtered_export_checks_records_and_links(log: AuditLog) -> None:
    """A filtered export verifies record by record; an edited record in it is still caught."""
    lines = list(log.iter_export("t1", AuditFilter(phase="finished")))
    assert [json.loads(line)["seq"] for line in lines[1:-1]] == [2, 4, 6]
    key = log.public_key
    verdict = verify_lines(lines, key)
    assert verdict.ok and verdict.records == 3 and "filtered" in (verdict.reason or "")
    edit_line(lines, 2, False, output="changed")
    bad = verify_lines(lines, key)
    assert not bad.ok and bad.first_bad_seq == 4


async def test_export_without_a_stored_head_is_unprovable(log: AuditLog) -> None:
    """If the head row is gone, the export carries no head line and offline verification fails at the tail."""
    with sqlite3.connect(log.path) as conn:
        conn.execute("DELETE FROM heads WHERE tenant = 't1'")
    lines = export_lines(log)
    assert json.loads(lines[-1]).get("type") != "head"
    verdict = verify_lines(lines)
    assert not verdict.ok and verdict.first_bad_seq == 7 and "no signed head" in (verdict.reason or "")
