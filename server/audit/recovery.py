"""At open: check each tenant's records against its signed head, decide where its chain (and Merkle tree)
continues, and write down what does not add up as an incident, so that no later write can seal over it.

The signed head is the only thing the server trusts. A tenant's chain continues after its valid head, so a
removed tail stays a visible gap. Records found beyond the head cannot have come from this server (records and
head commit together): they are moved to the ``quarantine`` table, freeing their seqs, and an incident names
the first of them. A tenant whose head is missing or does not verify (key lost or head forged) continues after
its stored records, with an incident saying its tail up to there is unauthenticated. ``AuditLog.verify``
reports incidents as failures at their seq.

A format-v1 head (HMAC under ``audit.key``) that still verifies is re-signed with the Ed25519 key: the upgrade
keeps old chains going. The Merkle frontier is taken from the head row when it matches the signed root, and
otherwise rebuilt from the stored record hashes (once, O(n)).
"""

from __future__ import annotations

import base64
import hmac
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field

from server.audit import db
from server.audit.merkle import Frontier, leaf_hash
from server.audit.records import ZERO_HASH, head_mac, head_message_v2, utc_timestamp
from server.audit.records import genesis_hash as _genesis
from server.audit.signing import ALGORITHM, SigningKey


@dataclass
class ChainState:
    """Where a tenant's chain continues: the last seq and hash, and the tree over seqs 1..seq."""

    seq: int
    hash: str
    frontier: Frontier


@dataclass
class Reconciled:
    """Where each tenant's chain continues, and the problems found (already recorded as incidents)."""

    state: dict[str, ChainState] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    upgraded: list[str] = field(default_factory=list)


def sign_head(key: SigningKey, tenant: str, state: ChainState) -> db.Head:
    root = base64.b64encode(state.frontier.root()).decode("ascii")
    sig = key.sign(head_message_v2(tenant, state.seq, state.hash, root))
    return db.Head(tenant, state.seq, state.hash, base64.b64encode(sig).decode("ascii"), ALGORITHM, root,
                   state.frontier.encode())


def head_is_valid(head: db.Head, key: SigningKey, legacy_key: bytes | None) -> bool:
    if head.alg == ALGORITHM:
        try:
            sig = base64.b64decode(head.mac, validate=True)
        except ValueError:
            return False
        return key.public.verify(sig, head_message_v2(head.tenant, head.seq, head.hash, head.root))
    if legacy_key is None:
        return False
    return hmac.compare_digest(head.mac, head_mac(legacy_key, head.tenant, head.seq, head.hash))


def stored_leaves(conn: sqlite3.Connection, tenant: str, upto: int) -> Iterator[bytes]:
    """The leaf hashes of seqs 1..upto from stored hashes; a missing record counts as a zero leaf (and is an
    incident already), so leaf ``i`` stays the record with seq ``i + 1``."""
    zero, size = leaf_hash(ZERO_HASH), 0
    for seq, record_hash in db.record_hashes(conn, tenant, upto):
        while size < seq - 1:
            yield zero
            size += 1
        yield leaf_hash(record_hash)
        size += 1
    while size < upto:
        yield zero
        size += 1


def rebuild_frontier(conn: sqlite3.Connection, tenant: str, upto: int) -> Frontier:
    """The tree over seqs 1..upto (``stored_leaves``)."""
    frontier = Frontier()
    for leaf in stored_leaves(conn, tenant, upto):
        frontier.append(leaf)
    return frontier


def reconcile(conn: sqlite3.Connection, key: SigningKey, legacy_key: bytes | None = None,
              published: dict[str, int] | None = None) -> Reconciled:
    """One transaction: compare heads with records, quarantine records past a head, record incidents.

    ``published`` (tenant -> largest tree size the publication hook delivered) catches a log that lost its
    last commits or was rolled back to an older copy: head and records then agree with each other, but not
    with what already left the box."""
    out = Reconciled()
    published = published or {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        heads = db.read_heads(conn)
        tails = db.last_records(conn)
        for tenant in sorted(set(heads) | set(tails)):
            _one(conn, key, legacy_key, tenant, heads.get(tenant), tails.get(tenant), out)
        for tenant, size in sorted(published.items()):
            state = out.state.setdefault(tenant, ChainState(0, _genesis(tenant), Frontier()))
            if size > state.seq:
                _incident(conn, tenant, state.seq + 1, out,
                          f"a checkpoint at tree size {size} was published, but the log ends at seq {state.seq}: "
                          "its later commits were lost or the database was rolled back")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return out


def _stored_frontier(head: db.Head) -> Frontier | None:
    if head.alg != ALGORITHM or not head.frontier:
        return None
    try:
        frontier = Frontier.decode(head.seq, head.frontier)
    except ValueError:
        return None
    return frontier if base64.b64encode(frontier.root()).decode("ascii") == head.root else None


def _one(conn: sqlite3.Connection, key: SigningKey, legacy_key: bytes | None, tenant: str,
         head: db.Head | None, tail: tuple[int, str] | None, out: Reconciled) -> None:
    last_seq, last_hash = tail or (0, "")
    if head is None or not head_is_valid(head, key, legacy_key):
        assert tail is not None  # a tenant is listed only if it has a head or records
        what = "missing" if head is None else "invalid (key changed or head forged)"
        _incident(conn, tenant, last_seq + 1, out,
                  f"signed head {what} at open; records up to seq {last_seq} are unauthenticated at the tail "
                  "and were resealed under a new head")
        out.state[tenant] = ChainState(last_seq, last_hash or _genesis(tenant),
                                       rebuild_frontier(conn, tenant, last_seq))
        db.write_heads(conn, [sign_head(key, tenant, out.state[tenant])])
        return
    seq, signed_hash = head.seq, head.hash
    frontier = _stored_frontier(head)
    if frontier is None:
        frontier = rebuild_frontier(conn, tenant, seq)
        if head.alg == ALGORITHM and base64.b64encode(frontier.root()).decode("ascii") != head.root:
            _incident(conn, tenant, 1, out, f"the stored records 1..{seq} do not give the signed Merkle root")
    state = out.state[tenant] = ChainState(seq, signed_hash, frontier)
    if head.alg != ALGORITHM:  # a v1 HMAC head that verified: carry the chain over to Ed25519
        db.write_heads(conn, [sign_head(key, tenant, state)])
        out.upgraded.append(tenant)
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
