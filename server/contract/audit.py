"""Response models of the audit routes; a record's fields are ``server.audit.records.FIELDS`` (a tool call's
``started``/``finished``) or ``CONNECTION_FIELDS`` (one egress ``connection``), told apart by ``phase``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from server.contract.common import Model, PageMeta


class AuditRecord(Model):
    """One hash-chained record (format v1): a call's start (`started`) or its end (`finished`)."""

    v: int
    seq: int = Field(ge=1)
    ts: str
    tenant: str
    session_id: str | None
    call_id: str | None
    phase: Literal["started", "finished"]
    tool: str | None
    policy: str | None
    decision: str | None
    reason: str | None
    input: Any = Field(description="The call's input, or a prefix of its canonical JSON when truncated.")
    input_truncated: bool
    input_sha256: str | None
    exit_code: int | None
    timed_out: bool | None
    oom_killed: bool | None
    truncated: bool | None
    limit: str | None
    duration_ms: float | None
    error_code: str | None
    error_message: str | None
    output: str | None
    output_truncated: bool
    output_sha256: str | None
    container_id: str | None
    image_id: str | None
    prev_hash: str
    hash: str


class ConnectionAuditRecord(Model):
    """One egress attempt through the tenant's proxy (format v2, docs/egress.md), allowed or denied, written
    when the connection ended or was refused; ``call_id`` is null for a connection no call was running for."""

    v: int
    seq: int = Field(ge=1)
    ts: str = Field(description="When the record was committed (after the connection ended).")
    tenant: str
    session_id: str | None
    call_id: str | None
    phase: Literal["connection"]
    tool: None
    decision: Literal["allowed", "denied"]
    reason: str | None = Field(description="Why it was refused or cut: the rule, the limit or the error.")
    started_at: str | None = Field(description="When the attempt began.")
    method: str | None = Field(description="`CONNECT` or the plain HTTP method.")
    host: str | None
    port: int | None
    address: str | None = Field(description="The resolved address connected to (or refused).")
    rule: str | None = Field(description="`allow:<rule>`, `deny:<rule>`, `default`, `ip-literal`, "
                                         "`address:<kind>`, `mode`, `credential`, `bad-request`.")
    limit: str | None = Field(description="The proxy limit that refused or ended it: `connections`, `duration`.")
    error: str | None = Field(description="An upstream failure: `resolve`, `connect: …`.")
    bytes_up: int = Field(ge=0)
    bytes_down: int = Field(ge=0)
    duration_ms: float = Field(ge=0)
    throttled_ms: float = Field(ge=0)
    prev_hash: str
    hash: str


AnyAuditRecord = Annotated[AuditRecord | ConnectionAuditRecord, Field(discriminator="phase")]


class AuditPage(Model):
    data: list[AnyAuditRecord]
    meta: PageMeta


class Verification(Model):
    ok: bool = Field(description="The chain is intact and ends at its signed head.")
    records: int = Field(ge=0)
    first_bad_seq: int | None
    reason: str | None


class AuditKey(Model):
    """The server's public key (never a secret) and this tenant's log origin."""

    algorithm: str
    key_name: str
    key_id: str
    public_key: str = Field(description="Raw Ed25519 public key, base64.")
    vkey: str = Field(description="The C2SP note verifier key.")
    public_key_pem: str
    origin: str


class Checkpoint(Model):
    tree_size: int = Field(ge=0)
    root_hash: str
    note: str = Field(description="The C2SP signed note.")
    created_at: str


class CheckpointPage(Model):
    data: list[Checkpoint]
    meta: PageMeta


class InclusionProof(Model):
    """An RFC 6962 inclusion proof of one record in a signed checkpoint."""

    type: Literal["inclusion_proof"]
    v: int
    tenant: str
    seq: int = Field(ge=1)
    leaf_index: int = Field(ge=0)
    tree_size: int = Field(ge=1)
    record: AnyAuditRecord
    audit_path: list[str]
    checkpoint: str
