"""The audit SQLite file: schema, connections and the read queries (the writer lives in ``writer.py``).

Each record is stored whole as its canonical JSON (``body``); a few fields are copied into columns only so
that they can be filtered and indexed. Verification recomputes everything from ``body`` and checks that the
columns agree with it, so editing either one is detected.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from server.audit.records import utc_timestamp

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    tenant TEXT NOT NULL, seq INTEGER NOT NULL, ts TEXT NOT NULL, session_id TEXT, call_id TEXT,
    phase TEXT NOT NULL, tool TEXT, decision TEXT, hash TEXT NOT NULL, body TEXT NOT NULL,
    UNIQUE (tenant, seq)
);
CREATE INDEX IF NOT EXISTS records_by_session ON records (tenant, session_id, seq);
CREATE INDEX IF NOT EXISTS records_by_tool ON records (tenant, tool, seq);
CREATE INDEX IF NOT EXISTS records_by_ts ON records (tenant, ts);
CREATE INDEX IF NOT EXISTS records_by_call ON records (tenant, call_id, phase);
CREATE TABLE IF NOT EXISTS heads (
    tenant TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL, mac TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    tenant TEXT NOT NULL, size INTEGER NOT NULL, root TEXT NOT NULL, note TEXT NOT NULL,
    created_at TEXT NOT NULL, UNIQUE (tenant, size)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    tenant TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, body TEXT NOT NULL, moved_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    tenant TEXT NOT NULL, seq INTEGER NOT NULL, detected_at TEXT NOT NULL, detail TEXT NOT NULL
);
"""
# Added in schema 2 (log format v2): how the head is signed, the Merkle root it signs, and the tree frontier.
HEAD_COLUMNS = {"alg": "TEXT NOT NULL DEFAULT 'HMAC-SHA256'", "root": "TEXT NOT NULL DEFAULT ''",
                "frontier": "TEXT NOT NULL DEFAULT ''"}
# Added in schema 3 (log format 3): the host of a connection record, for GET /v1/audit?host=.
RECORD_COLUMNS = {"host": "TEXT"}
COLUMNS = ("seq", "ts", "session_id", "call_id", "phase", "tool", "decision", "host", "hash")
BATCH = 200  # rows are at most ~35 KiB, so a batch stays under ~7 MiB


@dataclass(frozen=True)
class AuditFilter:
    """Which records of one tenant to list or export; ``since`` and ``until`` are both inclusive."""

    session_id: str | None = None
    tool: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    decision: str | None = None
    phase: str | None = None
    host: str | None = None

    def is_empty(self) -> bool:
        return self == AuditFilter()

    def describe(self) -> dict[str, Any]:
        """The filter as JSON data (for the export's head line)."""
        return {"session_id": self.session_id, "tool": self.tool, "decision": self.decision,
                "phase": self.phase, "host": self.host, "since": utc_timestamp(self.since) if self.since else None,
                "until": utc_timestamp(self.until) if self.until else None}

    def where(self) -> tuple[str, list[Any]]:
        """SQL conditions (after ``tenant = ?``) and their parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        for column in ("session_id", "tool", "decision", "phase", "host"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.since is not None:
            clauses.append("ts >= ?")
            params.append(utc_timestamp(self.since))
        if self.until is not None:
            clauses.append("ts <= ?")
            params.append(utc_timestamp(self.until))
        return "".join(f" AND {c}" for c in clauses), params


def create_file(path: Path) -> None:
    """Make the database file with mode 0600 before SQLite opens it (its -wal/-shm files copy the mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def connect(path: Path, *, synchronous: str = "FULL", readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, with a busy timeout."""
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA busy_timeout = 10000")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.executescript(SCHEMA)
        have = {str(row[1]) for row in conn.execute("PRAGMA table_info(heads)")}
        for name, decl in HEAD_COLUMNS.items():
            if name not in have:  # a schema-1 database: its heads stay HMAC until recovery re-signs them
                conn.execute(f"ALTER TABLE heads ADD COLUMN {name} {decl}")
        have = {str(row[1]) for row in conn.execute("PRAGMA table_info(records)")}
        for name, decl in RECORD_COLUMNS.items():
            if name not in have:  # an older database: its records have no host, as their bodies say
                conn.execute(f"ALTER TABLE records ADD COLUMN {name} {decl}")
        conn.execute("CREATE INDEX IF NOT EXISTS records_by_host ON records (tenant, host, seq)")
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) "
                     "DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))
    return conn


@dataclass(frozen=True)
class Head:
    """A stored signed head; ``mac`` is base64 Ed25519 when ``alg`` is Ed25519, hex HMAC for format v1."""

    tenant: str
    seq: int
    hash: str
    mac: str
    alg: str
    root: str
    frontier: str


_HEAD = "SELECT tenant, seq, hash, mac, alg, root, frontier FROM heads"


def _head(row: Any) -> Head:
    return Head(str(row[0]), int(row[1]), *map(str, row[2:]))


def read_heads(conn: sqlite3.Connection) -> dict[str, Head]:
    return {head.tenant: head for head in map(_head, conn.execute(_HEAD))}


def read_head(conn: sqlite3.Connection, tenant: str) -> Head | None:
    row = conn.execute(_HEAD + " WHERE tenant = ?", (tenant,)).fetchone()
    return None if row is None else _head(row)


def write_heads(conn: sqlite3.Connection, heads: list[Head]) -> None:
    conn.executemany(
        "INSERT INTO heads (tenant, seq, hash, mac, alg, root, frontier) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac, "
        "alg = excluded.alg, root = excluded.root, frontier = excluded.frontier",
        [(h.tenant, h.seq, h.hash, h.mac, h.alg, h.root, h.frontier) for h in heads])


def record_hashes(conn: sqlite3.Connection, tenant: str, upto: int) -> Iterator[tuple[int, str]]:
    """``(seq, hash)`` of the tenant's records with seq <= ``upto``, in order (for Merkle trees and proofs)."""
    yield from ((int(s), str(h)) for s, h in iter_rows(conn, tenant, AuditFilter(), max_seq=upto,
                                                       columns="seq, hash"))


def last_checkpoints(conn: sqlite3.Connection) -> dict[str, int]:
    """Each tenant's latest checkpoint size."""
    return {str(t): int(s) for t, s in conn.execute("SELECT tenant, MAX(size) FROM checkpoints GROUP BY tenant")}


def checkpoints(conn: sqlite3.Connection, tenant: str, *, limit: int, offset: int = 0,
                size: int | None = None, after: int | None = None) -> list[dict[str, Any]]:
    """Checkpoints newest first (or the one at ``size``, or those after ``after`` oldest first)."""
    sql = "SELECT size, root, note, created_at FROM checkpoints WHERE tenant = ?"
    params: list[Any] = [tenant]
    if size is not None:
        sql, params = sql + " AND size = ?", [*params, size]
    if after is not None:
        sql, params = sql + " AND size > ? ORDER BY size", [*params, after]
    else:
        sql += " ORDER BY size DESC"
    rows = conn.execute(sql + " LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
    return [{"tree_size": int(s), "root_hash": str(r), "note": str(n), "created_at": str(c)} for s, r, n, c in rows]


def count_checkpoints(conn: sqlite3.Connection, tenant: str) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM checkpoints WHERE tenant = ?", (tenant,)).fetchone()[0])


def checkpoint_tenants(conn: sqlite3.Connection) -> list[str]:
    return [str(t) for (t,) in conn.execute("SELECT DISTINCT tenant FROM checkpoints ORDER BY tenant")]


def last_records(conn: sqlite3.Connection) -> dict[str, tuple[int, str]]:
    """Each tenant's highest stored seq and its hash (to notice a head that disagrees with the records)."""
    rows = conn.execute(
        "SELECT r.tenant, r.seq, r.hash FROM records r JOIN "
        "(SELECT tenant, MAX(seq) AS seq FROM records GROUP BY tenant) m "
        "ON r.tenant = m.tenant AND r.seq = m.seq")
    return {t: (s, h) for t, s, h in rows}


def first_incident(conn: sqlite3.Connection, tenant: str) -> tuple[int, str] | None:
    """The lowest-seq problem found at an open (see ``recovery.py``), if any."""
    row = conn.execute("SELECT seq, detail FROM incidents WHERE tenant = ? ORDER BY seq, rowid LIMIT 1",
                       (tenant,)).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def count(conn: sqlite3.Connection, tenant: str, flt: AuditFilter) -> int:
    where, params = flt.where()
    row = conn.execute(f"SELECT COUNT(*) FROM records WHERE tenant = ?{where}",  # noqa: S608 (fixed columns)
                       [tenant, *params]).fetchone()
    return int(row[0])


def page(conn: sqlite3.Connection, tenant: str, flt: AuditFilter, *, offset: int,
         limit: int) -> list[dict[str, Any]]:
    where, params = flt.where()
    rows = conn.execute(
        f"SELECT body FROM records WHERE tenant = ?{where} ORDER BY seq LIMIT ? OFFSET ?",  # noqa: S608
        [tenant, *params, limit, offset])
    return [json.loads(body) for (body,) in rows]


def iter_rows(conn: sqlite3.Connection, tenant: str, flt: AuditFilter, *, max_seq: int | None = None,
              columns: str = "body") -> Iterator[tuple[Any, ...]]:
    """Rows in seq order, fetched in batches by seq (no long-lived cursor, memory stays flat)."""
    where, params = flt.where()
    if max_seq is not None:
        where += " AND seq <= ?"
        params.append(max_seq)
    after = 0
    while True:
        rows = conn.execute(
            f"SELECT seq, {columns} FROM records WHERE tenant = ? AND seq > ?{where} "  # noqa: S608
            "ORDER BY seq LIMIT ?", [tenant, after, *params, BATCH]).fetchall()
        if not rows:
            return
        for row in rows:
            yield tuple(row[1:])
        after = int(rows[-1][0])
