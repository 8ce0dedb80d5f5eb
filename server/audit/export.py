"""The export format: JSON Lines — an ``export`` line, each record's canonical JSON in seq order, then a
``head`` line.

The head line is the signed head as stored when the export began, and only records up to it are exported, so
an export taken while calls are running still ends exactly at its head. A tenant whose records have no
stored head gets no head line: the verifier then reports the tail as unprovable rather than the server
vouching for it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime

from server.audit import db
from server.audit.db import AuditFilter
from server.audit.records import FORMAT_VERSION, genesis_hash, head_mac, key_id, tenant_key, utc_timestamp


def header_line(tenant: str, flt: AuditFilter, exported_at: datetime | None = None) -> str:
    filters = None if flt.is_empty() else flt.describe()
    return json.dumps({"type": "export", "v": FORMAT_VERSION, "tenant": tenant, "filters": filters,
                       "exported_at": utc_timestamp(exported_at)}, ensure_ascii=False) + "\n"


def head_line(tenant: str, seq: int, last_hash: str, mac: str, key: bytes, *, filtered: bool) -> str:
    return json.dumps({"type": "head", "v": FORMAT_VERSION, "tenant": tenant, "seq": seq, "hash": last_hash,
                       "mac": mac, "mac_alg": "HMAC-SHA256", "key_id": key_id(tenant_key(key, tenant)),
                       "filtered": filtered},
                      ensure_ascii=False) + "\n"


def iter_export(connect: Callable[[], sqlite3.Connection], key: bytes, tenant: str,
                flt: AuditFilter | None = None) -> Iterator[str]:
    """Lines of ``tenant``'s export; reads in batches so memory stays flat however long the log is."""
    flt = flt or AuditFilter()
    conn = connect()
    try:
        head = db.read_head(conn, tenant)
        yield header_line(tenant, flt)
        if head is None and db.count(conn, tenant, AuditFilter()) == 0:
            empty = genesis_hash(tenant)
            head = (0, empty, head_mac(key, tenant, 0, empty))
        max_seq = head[0] if head is not None else None
        for (body,) in db.iter_rows(conn, tenant, flt, max_seq=max_seq):
            yield body + "\n"
        if head is not None:
            yield head_line(tenant, head[0], head[1], head[2], key, filtered=not flt.is_empty())
    finally:
        conn.close()
