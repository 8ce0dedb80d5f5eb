"""At open: check each tenant's records against its signed head, decide where its chain continues, and
write down what does not add up as an incident, so that no later write can seal over it.

The signed head is the only thing the server trusts. A tenant's chain continues after its valid head, so a
removed tail stays a visible gap. Records found beyond the head cannot have come from this server (records and
head commit together): they are moved to the ``quarantine`` table, freeing their seqs, and an incident names
the first of them. A tenant whose head is missing or does not verify (key lost or head forged) continues after
its stored records, with an incident saying its tail up to there is unauthenticated. ``AuditLog.verify``
reports incidents as failures at their seq.
"""

from __future__ import annotations

import hmac
import sqlite3
from dataclasses import dataclass, field

from server.audit import db
from server.audit.records import head_mac, utc_timestamp


@dataclass
class Reconciled:
    """Where each tenant's chain continues, and the problems found (already recorded as incidents)."""

    state: dict[str, tuple[int, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def reconcile(conn: sqlite3.Connection, key: bytes) -> Reconciled:
    """One transaction: compare heads with records, quarantine records past a head, record incidents."""
    out = Reconciled()
    conn.execute("BEGIN IMMEDIATE")
    try:
        heads = db.read_heads(conn)
        tails = db.last_records(conn)
        for tenant in sorted(set(heads) | set(tails)):
            _one(conn, key, tenant, heads.get(tenant), tails.get(tenant), out)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return out


def _one(conn: sqlite3.Connection, key: bytes, tenant: str, head: tuple[int, str, str] | None,
         tail: tuple[int, str] | None, out: Reconciled) -> None:
    last_seq, last_hash = tail or (0, "")
    if head is None or not hmac.compare_digest(head[2], head_mac(key, tenant, head[0], head[1])):
        assert tail is not None  # a tenant is listed only if it has a head or records
        what = "missing" if head is None else "invalid (key changed or head forged)"
        _incident(conn, tenant, last_seq + 1, out,
                  f"signed head {what} at open; records up to seq {last_seq} are unauthenticated at the tail "
                  "and were resealed under a new head")
        out.state[tenant] = (last_seq, last_hash)
        return
    seq, signed_hash, _ = head
    out.state[tenant] = (seq, signed_hash)
    if last_seq > seq:
        moved = conn.execute(
            "INSERT INTO quarantine (tenant, seq, hash, body, moved_at) "
            "SELECT tenant, seq, hash, body, ? FROM records WHERE tenant = ? AND seq > ?",
            (utc_timestamp(), tenant, seq)).rowcount
        conn.execute("DELETE FROM records WHERE tenant = ? AND seq > ?", (tenant, seq))
        _incident(conn, tenant, seq + 1, out,
                  f"{moved} record(s) found beyond the signed head (seq {seq}) at open; "
                  "moved to the quarantine table")
    elif last_seq < seq:
        _incident(conn, tenant, last_seq + 1, out,
                  f"records {last_seq + 1}..{seq} missing at open (the signed head is at seq {seq})")
    elif last_hash != signed_hash:
        _incident(conn, tenant, seq, out, f"seq {seq} differs from the signed head at open")


def _incident(conn: sqlite3.Connection, tenant: str, seq: int, out: Reconciled, detail: str) -> None:
    exists = conn.execute("SELECT 1 FROM incidents WHERE tenant = ? AND seq = ? AND detail = ?",
                          (tenant, seq, detail)).fetchone()
    if exists is None:  # reopening the same damaged log does not pile up duplicates
        conn.execute("INSERT INTO incidents (tenant, seq, detected_at, detail) VALUES (?, ?, ?, ?)",
                     (tenant, seq, utc_timestamp(), detail))
    out.problems.append(f"tenant {tenant!r}: {detail}")
