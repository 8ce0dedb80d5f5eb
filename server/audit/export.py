"""The export format (log format v2): JSON Lines — an ``export`` line, each record's canonical JSON in seq
order, then a ``head`` line.

The head line is the signed head as stored when the export began (Ed25519 over tenant, seq, hash and Merkle
root), and only records up to it are exported, so an export taken while calls are running still ends exactly
at its head. A tenant whose records have no stored head gets no head line: the verifier then reports the tail
as unprovable rather than the server vouching for it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from server.audit import db
from server.audit.db import AuditFilter
from server.audit.merkle import Frontier
from server.audit.records import LOG_VERSION, genesis_hash, utc_timestamp
from server.audit.recovery import ChainState, sign_head
from server.audit.signing import PublicKey, SigningKey


def header_line(tenant: str, flt: AuditFilter, exported_at: datetime | None = None) -> str:
    filters = None if flt.is_empty() else flt.describe()
    return json.dumps({"type": "export", "v": LOG_VERSION, "tenant": tenant, "filters": filters,
                       "exported_at": utc_timestamp(exported_at)}, ensure_ascii=False) + "\n"


def head_object(head: db.Head, public: PublicKey, *, filtered: bool) -> dict[str, Any]:
    """The head line's content: what was signed, the signature, and which key made it."""
    return {"type": "head", "v": LOG_VERSION, "tenant": head.tenant, "seq": head.seq, "hash": head.hash,
            "root": head.root, "sig": head.mac, "sig_alg": head.alg, "key_id": public.key_id,
            "key_name": public.name, "filtered": filtered}


def iter_export(connect: Callable[[], sqlite3.Connection], key: SigningKey, tenant: str,
                flt: AuditFilter | None = None) -> Iterator[str]:
    """Lines of ``tenant``'s export; reads in batches so memory stays flat however long the log is."""
    flt = flt or AuditFilter()
    conn = connect()
    try:
        conn.execute("BEGIN")  # the head and the records from one snapshot
        head = db.read_head(conn, tenant)
        yield header_line(tenant, flt)
        if head is None and db.count(conn, tenant, AuditFilter()) == 0:
            head = sign_head(key, tenant, ChainState(0, genesis_hash(tenant), Frontier()))
        max_seq = head.seq if head is not None else None
        for (body,) in db.iter_rows(conn, tenant, flt, max_seq=max_seq):
            yield body + "\n"
        if head is not None:
            yield json.dumps(head_object(head, key.public, filtered=not flt.is_empty()),
                             ensure_ascii=False) + "\n"
    finally:
        conn.close()
