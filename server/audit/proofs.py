"""Inclusion proofs (RFC 6962 audit paths) of one record in a tenant's signed checkpoint.

The proof is built against a stored checkpoint, so it ends in a signature: the default is the latest
checkpoint; ``tree_size`` picks an older one. Building reads the tenant's record hashes up to the tree size
from the database (O(n) in 32-byte hashes, never the bodies); checking is ``proofcheck.check_proof``.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from typing import Any

from server.audit import db
from server.audit.merkle import inclusion_path
from server.audit.records import LOG_VERSION
from server.audit.recovery import stored_leaves
from server.errors import Conflict, NotFound


def inclusion(conn: sqlite3.Connection, tenant: str, seq: int, tree_size: int | None = None) -> dict[str, Any]:
    """The proof document ``verify --proof`` checks: the record, its audit path and the signed checkpoint."""
    found = db.checkpoints(conn, tenant, limit=1, size=tree_size)
    if not found:
        if tree_size is not None:
            raise NotFound("CHECKPOINT_NOT_FOUND", f"no checkpoint at tree size {tree_size}; "
                                                   "GET /v1/audit/checkpoints lists them")
        raise Conflict("NOT_YET_CHECKPOINTED", "no checkpoint yet: one is written every N records or T seconds")
    checkpoint = found[0]
    size = int(checkpoint["tree_size"])
    if seq > size:
        raise Conflict("NOT_YET_CHECKPOINTED",
                       f"record {seq} is after the checkpoint at tree size {size}; the next checkpoint covers it")
    row = conn.execute("SELECT body FROM records WHERE tenant = ? AND seq = ?", (tenant, seq)).fetchone()
    if row is None:
        raise NotFound("RECORD_NOT_FOUND", f"no record with seq {seq}")
    path = inclusion_path(seq - 1, list(stored_leaves(conn, tenant, size)))
    return {"type": "inclusion_proof", "v": LOG_VERSION, "tenant": tenant, "seq": seq, "leaf_index": seq - 1,
            "tree_size": size, "record": json.loads(str(row[0])),
            "audit_path": [base64.b64encode(h).decode("ascii") for h in path],
            "checkpoint": checkpoint["note"]}
