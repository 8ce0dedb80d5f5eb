"""The caller's tool audit log: list it, export it (JSON Lines, streamed), verify its chain, fetch the
server's PUBLIC key to check an export offline (``openanalyst audit verify EXPORT --public-key KEYFILE``),
list its signed checkpoints and get an inclusion proof of one record.

Always scoped to the calling tenant. Times in filters are RFC 3339 (with an offset or ``Z``) or epoch seconds;
anything else is a 422 ``INVALID_TIMESTAMP``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse, StreamingResponse

from server.api.deps import ServicesDep
from server.audit.db import AuditFilter
from server.audit.log import AuditLog
from server.audit.records import DECISIONS, PHASES
from server.contract.audit import (
    AuditKey,
    AuditPage,
    Checkpoint,
    CheckpointPage,
    InclusionProof,
    Verification,
)
from server.contract.common import PageMeta
from server.contract.openapi import COMMON, errors
from server.errors import NotFound, ServiceUnavailable, Unprocessable
from server.tenancy import TenantDep

router = APIRouter(tags=["audit"], responses=errors(*COMMON, 503))

MAX_PER_PAGE = 100  # as GET /sessions
Text = Annotated[str | None, Query(max_length=256)]
EPOCH = re.compile(r"[0-9]{1,11}(\.[0-9]{1,9})?")
RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                     r"([Zz]|[+-][0-9]{2}:[0-9]{2})")
# Documented precisely, checked by ``_filters`` (so a bad value is a 422 INVALID_FILTER / INVALID_TIMESTAMP).
Time = Annotated[str | None, Query(max_length=256, description="RFC 3339 with an offset, or epoch seconds.",
                                   json_schema_extra={"anyOf": [
                                       {"type": "string", "format": "date-time", "pattern": f"^{RFC3339.pattern}$"},
                                       {"type": "string", "pattern": f"^({EPOCH.pattern})?$"}]})]
Decision = Annotated[str | None, Query(json_schema_extra={"enum": list(DECISIONS)})]
Phase = Annotated[str | None, Query(json_schema_extra={"enum": list(PHASES)})]
Host = Annotated[str | None, Query(max_length=256, description="Only `connection` records to this host name "
                                                                 "(compared in lower case, without a trailing dot).")]


async def _audit_log(services: ServicesDep) -> AuditLog:
    """The open audit log; 503 AUDIT_UNAVAILABLE for an app whose services hold none (``async``: no thread hop)."""
    audit: AuditLog | None = services.audit
    if audit is None:
        raise ServiceUnavailable("AUDIT_UNAVAILABLE", "the audit log is not open")
    return audit


OpenAuditDep = Annotated[AuditLog, Depends(_audit_log)]


def parse_time(value: str | None, name: str) -> datetime | None:
    """An RFC 3339 date-time with an offset, or seconds since the epoch; ``None`` or empty passes through.

    Exactly the forms the OpenAPI document states (``EPOCH``, ``RFC3339``), nothing ``float`` or
    ``fromisoformat`` would also take (``1e9``, ``1_000``, ``2026-01-01T00:00:00+0100``)."""
    if value is None or value == "":
        return None
    if EPOCH.fullmatch(value):
        return datetime.fromtimestamp(float(value), UTC)  # at most 11 digits: always before year 9999
    parsed = None
    if RFC3339.fullmatch(value):
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:  # 2026-02-30, a leap second: the shape is right, the date is not
            parsed = None
    if parsed is None:
        raise Unprocessable("INVALID_TIMESTAMP",
                            f"{name}: expected RFC 3339 with an offset (2026-01-02T03:04:05Z) "
                            f"or epoch seconds, got {value[:100]!r}")
    return parsed.astimezone(UTC)


def _filters(session_id: str | None, tool: str | None, since: str | None, until: str | None,
             decision: str | None, phase: str | None, host: str | None = None) -> AuditFilter:
    if decision is not None and decision not in DECISIONS:
        raise Unprocessable("INVALID_FILTER", f"decision must be one of {list(DECISIONS)}, got {decision!r}")
    if phase is not None and phase not in PHASES:
        raise Unprocessable("INVALID_FILTER", f"phase must be one of {list(PHASES)}, got {phase!r}")
    start, end = parse_time(since, "since"), parse_time(until, "until")
    if start is not None and end is not None and start > end:
        raise Unprocessable("INVALID_FILTER", "since is after until")
    return AuditFilter(session_id=session_id, tool=tool, since=start, until=end, decision=decision,
                       phase=phase, host=host.lower().rstrip(".") if host else None)


@router.get("/v1/audit")
async def list_audit(tenant: TenantDep, audit: OpenAuditDep, session_id: Text = None, tool: Text = None,
                     since: Time = None, until: Time = None, decision: Decision = None, phase: Phase = None,
                     host: Host = None, page: Annotated[int, Query(ge=1, le=10**6)] = 1,
                     per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 20) -> AuditPage:
    """The tenant's records in seq order, one page at a time, shaped like ``GET /sessions``: tool calls'
    ``started``/``finished`` records and egress ``connection`` records (``?phase=connection&decision=denied``
    lists the refused connections, ``?host=pypi.org`` those to one host)."""
    flt = _filters(session_id, tool, since, until, decision, phase, host)
    records, total = await audit.list(
        tenant.id, session_id=flt.session_id, tool=flt.tool, since=flt.since, until=flt.until,
        decision=flt.decision, phase=flt.phase, host=flt.host, page=page, per_page=per_page)
    return AuditPage.model_validate({"data": records, "meta": PageMeta.of(page, per_page, total)})


_EXPORT: dict[int | str, dict[str, Any]] = {200: {
    "description": "JSON Lines, streamed: an `export` line, the records, then the signed `head` line.",
    "content": {"application/x-ndjson": {"schema": {"type": "string", "format": "binary"},
                                         "itemSchema": {"type": "object"}}}}}


@router.get("/v1/audit/export", response_class=StreamingResponse, responses=_EXPORT)
async def export_audit(tenant: TenantDep, audit: OpenAuditDep, session_id: Text = None, tool: Text = None,
                       since: Time = None, until: Time = None, decision: Decision = None,
                       phase: Phase = None, host: Host = None) -> StreamingResponse:
    """JSON Lines, streamed: an ``export`` line, the records, then the signed ``head`` line."""
    flt = _filters(session_id, tool, since, until, decision, phase, host)
    lines = audit.iter_export(tenant.id, flt)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    filename = f"audit-{tenant.id}-{stamp}.jsonl"
    return StreamingResponse(lines, media_type="application/x-ndjson",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      "Cache-Control": "no-store"})


@router.get("/v1/audit/verify")
async def verify_audit(tenant: TenantDep, audit: OpenAuditDep) -> Verification:
    """Whether the tenant's chain is intact and ends at its signed head."""
    return Verification(**await audit.verify(tenant.id))


@router.get("/v1/audit/key")
async def public_key(tenant: TenantDep, audit: OpenAuditDep) -> AuditKey:
    """The server's Ed25519 public key (raw base64, PEM, vkey), its key id, and this tenant's log origin.

    Never a secret: it verifies heads and checkpoints and cannot sign them."""
    return AuditKey(**audit.key_info(tenant.id))


@router.get("/v1/audit/checkpoints")
async def list_checkpoints(tenant: TenantDep, audit: OpenAuditDep,
                           page: Annotated[int, Query(ge=1, le=10**6)] = 1,
                           per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 20) -> CheckpointPage:
    """The tenant's signed checkpoints, newest first; each ``note`` is the C2SP signed note."""
    rows, total = await audit.checkpoints(tenant.id, page=page, per_page=per_page)
    return CheckpointPage(data=[Checkpoint(**r) for r in rows], meta=PageMeta.of(page, per_page, total))


@router.get("/v1/audit/checkpoints/latest", response_model=None, responses={
    200: {"model": Checkpoint, "description": "The checkpoint; with `?format=note`, its signed note as text.",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    **errors(404)})
async def latest_checkpoint(tenant: TenantDep, audit: OpenAuditDep,
                            format: Annotated[str, Query(pattern="^(json|note)$")] = "json",
                            ) -> Checkpoint | PlainTextResponse:
    """The newest checkpoint; ``?format=note`` answers the signed note alone, as text."""
    rows, _ = await audit.checkpoints(tenant.id, page=1, per_page=1)
    if not rows:
        raise NotFound("NO_CHECKPOINT", "no checkpoint yet: one is written every N records or T seconds")
    if format == "note":
        return PlainTextResponse(rows[0]["note"], headers={"Cache-Control": "no-store"})
    return Checkpoint(**rows[0])


@router.get("/v1/audit/proof", responses=errors(404, 409))
async def inclusion_proof(tenant: TenantDep, audit: OpenAuditDep, seq: Annotated[int, Query(ge=1, le=2**62)],
                          tree_size: Annotated[int | None, Query(ge=1, le=2**62)] = None) -> InclusionProof:
    """An RFC 6962 inclusion proof of record ``seq`` in a signed checkpoint (the latest by default), for
    ``openanalyst audit verify --proof FILE --public-key KEY``."""
    return InclusionProof.model_validate(await audit.proof(tenant.id, seq, tree_size))
