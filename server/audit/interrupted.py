"""At open, close the calls a crash left open: every ``started`` record without a ``finished`` one gets a
``finished`` record with ``error_code`` ``INTERRUPTED`` and the decision its ``started`` record had.

At open nothing can be running in this server, so a call without its outcome was cut off by the previous
process dying (``kill -9``, power, OOM). Its processes, if the container outlived the server, are ended by
the sandbox manager when it re-adopts the container.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from server.audit.records import finished_draft

CODE = "INTERRUPTED"
MESSAGE = "the server stopped before this call finished (closed when the server started again)"

# A session's call ids come from the model provider and may repeat, so "some finished record has this id"
# does not close a call: the k-th started record of an id is open while fewer than k finished ones exist.
# (``+p.seq``: count through records_by_call, not by scanning the tenant's earlier records.)
_OPEN_CALLS = """
SELECT s.tenant, s.body FROM records s
WHERE s.phase = 'started'
  AND (SELECT COUNT(*) FROM records p
       WHERE p.tenant = s.tenant AND p.call_id IS s.call_id AND p.phase = 'started' AND +p.seq <= s.seq)
    > (SELECT COUNT(*) FROM records f
       WHERE f.tenant = s.tenant AND f.call_id IS s.call_id AND f.phase = 'finished')
ORDER BY s.tenant, s.seq
"""


def open_call_drafts(conn: sqlite3.Connection) -> list[tuple[str, dict[str, Any]]]:
    """``(tenant, finished draft)`` for every call left open, oldest first per tenant."""
    drafts: list[tuple[str, dict[str, Any]]] = []
    for tenant, body in conn.execute(_OPEN_CALLS).fetchall():
        started = json.loads(body)
        result = {"output": "", "exit_code": None, "timed_out": False, "truncated": False,
                  "duration_ms": None, "limit": None, "error": {"code": CODE, "message": MESSAGE}}
        drafts.append((str(tenant), finished_draft(
            str(tenant), call_id=started["call_id"], session_id=started["session_id"], tool=started["tool"],
            result=result, oom_killed=False, container_id=None, image_id=None, policy=started["policy"],
            decision=started["decision"])))
    return drafts
