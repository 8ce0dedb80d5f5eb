"""``AuditLog``: the tool audit log's public face — write ``started``/``finished`` records, query, export,
verify.

Its own SQLite file ``<data_dir>/audit.db`` (WAL, mode 0600) and Ed25519 key ``<data_dir>/audit-signing.key``
(0600); neither is ever mounted into a container. ``<data_dir>/audit.key`` (the format-v1 HMAC key) is only
read, if present, to carry an old database's heads over to Ed25519. Writes go through the single writer
thread (``writer.py``) and return once the record is committed;
reads use short-lived read-only connections in worker threads.

Durability: with the default ``synchronous="NORMAL"`` (WAL) a record is on disk in the WAL when its await
returns, so it survives the server being killed; a power cut may lose the last commits (never half of one:
records and signed heads commit together, so the chain stays valid). ``"FULL"`` adds an fsync per group
commit, which on this kind of machine costs ~0.3 ms per record (see ``python -m server.audit.bench``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from server.audit import db, export, proofs
from server.audit.db import AuditFilter
from server.audit.keys import load_key
from server.audit.note import origin_for
from server.audit.publish import PublishConfig, Publisher, published_sizes
from server.audit.records import OUTPUT_CAP, connection_draft, finished_draft, started_draft
from server.audit.signing import PublicKey, SigningKey, load_or_create
from server.audit.verify import ChainVerifier, Verdict
from server.audit.writer import AuditWriteError, CheckpointPolicy, Writer

__all__ = ["AuditFilter", "AuditLog", "AuditWriteError", "CheckpointPolicy", "PublishConfig"]

Records = list[dict[str, Any]]
# Above this much output, hashing and capping move off the event loop.
_OFFLOAD_BYTES = 8 * OUTPUT_CAP


def _as_mapping(result: Any) -> Mapping[str, Any]:
    if isinstance(result, Mapping):
        return result
    dump = getattr(result, "model_dump", None)
    if callable(dump):
        dumped: Mapping[str, Any] = dump()
        return dumped
    raise TypeError(f"result must be a mapping of ToolResult fields, not {type(result).__name__}")


class AuditLog:
    """Hash-chained, per-tenant tool audit log with a signed head per tenant."""

    def __init__(self, path: Path, *, key_path: Path | None = None, signing_key_path: Path | None = None,
                 key_name: str = "openanalyst-audit", synchronous: Literal["FULL", "NORMAL"] = "NORMAL",
                 checkpoints: CheckpointPolicy | None = None, publish: PublishConfig | None = None) -> None:
        self.path = Path(path)
        self.key_path = key_path or self.path.with_name("audit.key")  # v1 HMAC key: read if present
        self.signing_key_path = signing_key_path or self.path.with_name("audit-signing.key")
        self._key_name = key_name
        self._synchronous = synchronous
        self._checkpoints = checkpoints or CheckpointPolicy()
        self._publish = publish or PublishConfig()
        self._signing: SigningKey | None = None
        self._writer: Writer | None = None
        self._publisher: Publisher | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the files if needed (0600) and start the writer."""
        await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> None:
        if self._writer is not None:  # already open: a second writer would break the one-writer rule
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._signing = load_or_create(self.signing_key_path, self._key_name)
        legacy = load_key(self.key_path) if self.key_path.exists() else None
        db.create_file(self.path)
        published_state = self.path.with_name("audit-published.json")
        publisher = Publisher(self._publish, lambda: db.connect(self.path, readonly=True), published_state)
        writer = Writer(self.path, self._signing, legacy_key=legacy, published=published_sizes(published_state),
                        synchronous=self._synchronous,
                        checkpoints=self._checkpoints, on_checkpoint=publisher.wake)
        writer.start()
        publisher.start()
        self._writer, self._publisher = writer, publisher

    async def close(self) -> None:
        """Write everything already submitted, then stop the writer and the publisher."""
        writer, self._writer = self._writer, None
        publisher, self._publisher = self._publisher, None
        if writer is not None:
            await asyncio.to_thread(writer.stop)
        if publisher is not None:
            await asyncio.to_thread(publisher.stop)

    def _signing_key(self) -> SigningKey:
        if self._signing is None:
            raise AuditWriteError("the audit log is not open")
        return self._signing

    @property
    def public_key(self) -> PublicKey:
        """The key that verifies every head and checkpoint; safe to hand to anyone."""
        return self._signing_key().public

    def key_info(self, tenant_id: str) -> dict[str, str]:
        """What ``GET /v1/audit/key`` answers: the public key in its forms and this tenant's log origin."""
        return self.public_key.describe() | {"origin": origin_for(self.public_key.name, tenant_id)}

    @property
    def warnings(self) -> list[str]:
        """Problems noticed at open (heads that do not verify, records past the head)."""
        return list(self._writer.warnings) if self._writer else []

    # -- writing ---------------------------------------------------------------------------------------------

    async def _submit(self, tenant_id: str, draft: dict[str, Any]) -> int:
        if self._writer is None:
            raise AuditWriteError("the audit log is not open")
        return await self._writer.submit(tenant_id, draft)

    async def started(self, tenant_id: str, *, call_id: str, session_id: str | None, tool: str,
                      input: Mapping[str, Any], policy: str, decision: str,
                      reason: str | None = None) -> int:
        """Record a call before it runs (or its refusal); returns the record's seq once it is durable."""
        draft = started_draft(tenant_id, call_id=call_id, session_id=session_id, tool=tool, input=input,
                              policy=policy, decision=decision, reason=reason)
        return await self._submit(tenant_id, draft)

    async def finished(self, tenant_id: str, *, call_id: str, session_id: str | None, tool: str,
                       result: Mapping[str, Any], oom_killed: bool, container_id: str | None,
                       image_id: str | None, policy: str, decision: str) -> int:
        """Record how a call ended (``result`` holds the ToolResult fields); returns the seq once durable."""
        fields = _as_mapping(result)
        output = fields.get("output")
        kwargs: dict[str, Any] = {"call_id": call_id, "session_id": session_id, "tool": tool,
                                  "result": fields, "oom_killed": oom_killed, "container_id": container_id,
                                  "image_id": image_id, "policy": policy, "decision": decision}
        if isinstance(output, str) and len(output) > _OFFLOAD_BYTES:
            draft = await asyncio.to_thread(lambda: finished_draft(tenant_id, **kwargs))
        else:
            draft = finished_draft(tenant_id, **kwargs)
        return await self._submit(tenant_id, draft)

    def connection(self, tenant_id: str, conn: Mapping[str, Any]) -> asyncio.Future[int]:
        """Queue one egress attempt's record (``records.connection_draft``) without waiting for it: called on
        the proxy's event loop, which must not block. The future says when it is durable, or why not."""
        if self._writer is None:
            raise AuditWriteError("the audit log is not open")
        return self._writer.submit(tenant_id, connection_draft(tenant_id, conn))

    # -- reading ---------------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._writer is None:
            raise AuditWriteError("the audit log is not open")
        return db.connect(self.path, readonly=True)

    async def list(self, tenant_id: str, *, session_id: str | None = None, tool: str | None = None,
                   since: datetime | None = None, until: datetime | None = None, decision: str | None = None,
                   phase: str | None = None, host: str | None = None, page: int = 1,
                   per_page: int = 50) -> tuple[Records, int]:
        """One page (1-based) of the tenant's records in seq order, and how many match in all."""
        flt = AuditFilter(session_id=session_id, tool=tool, since=since, until=until, decision=decision,
                          phase=phase, host=host)

        def run() -> tuple[Records, int]:
            conn = self._connect()
            try:
                conn.execute("BEGIN")  # the total and the page from the same snapshot
                total = db.count(conn, tenant_id, flt)
                rows = db.page(conn, tenant_id, flt, offset=(max(page, 1) - 1) * per_page, limit=per_page)
                return rows, total
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def count(self, tenant_id: str, phase: str | None = None) -> int:
        """How many records the tenant has (of one phase, if given)."""
        def run() -> int:
            conn = self._connect()
            try:
                return db.count(conn, tenant_id, AuditFilter(phase=phase))
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    def iter_export(self, tenant_id: str, filters: AuditFilter | None = None) -> Iterator[str]:
        """The tenant's export as JSON lines (a blocking iterator: run it in a thread, as Starlette does)."""
        if self._writer is None:
            raise AuditWriteError("the audit log is not open")
        return export.iter_export(self._connect, self._signing_key(), tenant_id, filters)

    async def checkpoints(self, tenant_id: str, *, page: int = 1,
                          per_page: int = 20) -> tuple[Records, int]:
        """The tenant's checkpoints, newest first, and how many there are."""
        def run() -> tuple[Records, int]:
            conn = self._connect()
            try:
                conn.execute("BEGIN")
                rows = db.checkpoints(conn, tenant_id, limit=per_page, offset=(max(page, 1) - 1) * per_page)
                return rows, db.count_checkpoints(conn, tenant_id)
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def proof(self, tenant_id: str, seq: int, tree_size: int | None = None) -> dict[str, Any]:
        """An inclusion proof of record ``seq`` in a signed checkpoint (``proofs.inclusion``)."""
        def run() -> dict[str, Any]:
            conn = self._connect()
            try:
                conn.execute("BEGIN")
                return proofs.inclusion(conn, tenant_id, seq, tree_size)
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def verify(self, tenant_id: str) -> dict[str, Any]:
        """Check the tenant's chain and its signed head: ``{"ok", "records", "first_bad_seq", "reason"}``."""
        return (await asyncio.to_thread(self.verify_verdict, tenant_id)).as_dict()

    def verify_verdict(self, tenant_id: str) -> Verdict:
        """The blocking verification behind ``verify``; also checks the indexed columns against each body."""
        conn = self._connect()
        try:
            conn.execute("BEGIN")  # one snapshot: records and head as of the same commit, even mid-write
            verifier = ChainVerifier(tenant_id)
            columns = ", ".join(db.COLUMNS) + ", body"
            for row in db.iter_rows(conn, tenant_id, AuditFilter(), columns=columns):
                record, problem = _parse_row(row)
                if problem is None:
                    verifier.feed(record)
                else:
                    verifier.reject(problem)
            head = db.read_head(conn, tenant_id)
            incident = db.first_incident(conn, tenant_id)
        finally:
            conn.close()
        head_obj = None if head is None else export.head_object(head, self.public_key, filtered=False)
        if head_obj is None and verifier.records == 0:
            verdict = Verdict(ok=True, records=0, tail_authenticated=True)
        else:
            verdict = verifier.finish(head_obj, self.public_key)
        if incident is not None and (verdict.first_bad_seq is None or incident[0] < verdict.first_bad_seq):
            verdict.ok, verdict.tail_authenticated = False, False
            verdict.first_bad_seq, verdict.reason = incident[0], f"incident recorded at open: {incident[1]}"
        return verdict


def _parse_row(row: tuple[Any, ...]) -> tuple[Any, str | None]:
    """The stored body, or why it cannot stand: not JSON, or an indexed column that disagrees with it."""
    *values, body = row
    try:
        record = json.loads(body)
    except (TypeError, ValueError):
        return None, "stored body is not JSON"
    if not isinstance(record, dict):
        return None, "stored body is not a JSON object"
    for name, value in zip(db.COLUMNS, values, strict=True):
        if record.get(name) != value:
            return None, f"column {name!r} disagrees with the stored record"
    return record, None
