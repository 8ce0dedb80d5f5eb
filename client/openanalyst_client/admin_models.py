"""Typed results of the account, provider, sandbox, skills and audit-trust routes, mirroring the server's
OpenAPI schemas of the same names (``tests/client/test_client_contract.py`` checks them field for field).

Deeply nested, informational parts of ``SandboxInfo`` (limits, usage, the image build) stay plain mappings:
they are read by people and dashboards, and the server adds to them more often than to the top level.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from openanalyst_client.models import AuditRecord, ChatAnswer, ConnectionAuditRecord, Model, PageMeta


class Account(Model):
    signed_in: bool
    email: str | None
    plan: str | None
    credits: float | None
    balance: float | None


class Balance(Model):
    plan_name: str | None
    plan_limit: float | None
    plan_used: float | None
    plan_remaining: float | None
    purchases_total: float | None
    purchases_remaining: float | None
    total_available: float | None


class AuthStatus(Model):
    signed_in: bool
    email: str | None
    expires_at: str | None
    balance: Balance | None
    manual_key_present: bool
    preferred_source: Literal["manual", "oauth"]


class CodeDelivery(Model):
    destination: str | None
    delivery_medium: str | None


class OtpChallenge(Model):
    challenge_id: str | None
    code_delivery: CodeDelivery | None
    expires_at: int | None
    rate_limited: bool
    retry_after_seconds: int | None


class ProviderEntry(Model):
    name: str
    source: Literal["env", "api"]
    api_key: str | None
    base_url: str | None
    updated_at: str | None


class ProviderList(Model):
    data: list[ProviderEntry]


class ProviderStatus(Model):
    provider: str
    configured: bool
    breaker_key: str | None
    state: str
    consecutive_failures: int
    credential_rejected: bool
    last_error: str | None
    last_latency_ms: float | None


class ProviderStatusList(Model):
    data: list[ProviderStatus]


class SandboxInfo(Model):
    tenant: str
    state: str
    container_id: str | None
    image_build: dict[str, Any]
    policy: str | None = None
    image: str | None = None
    image_id: str | None = None
    limits: dict[str, Any] | None = None
    egress: dict[str, Any] | None = None
    calls_in_flight: int | None = None
    workspace: dict[str, Any] | None = None
    started_at: str | None = None
    idle_s: float | None = None
    usage: dict[str, Any] | None = None
    last_stop: dict[str, Any] | None = None
    engine: str | None = None
    engines: list[dict[str, Any]] | None = None


class SkillInfo(Model):
    name: str
    description: str
    source: Literal["server", "tenant"]
    path: str
    allowed_tools: list[str] | None
    license: str | None = None
    compatibility: str | None = None
    metadata: dict[str, str] = {}
    files: list[str]


class SkillProblem(Model):
    name: str | None
    source: Literal["server", "tenant"]
    path: str
    reason: str


class SkillList(Model):
    data: list[SkillInfo]
    problems: list[SkillProblem]


class SkillMatch(SkillInfo):
    score: float


class SkillMatches(Model):
    query: str
    data: list[SkillMatch]


class SkillRunAnswer(ChatAnswer):
    skills: list[str]


class Checkpoint(Model):
    tree_size: int
    root_hash: str
    note: str
    created_at: str


class CheckpointPage(Model):
    data: list[Checkpoint]
    meta: PageMeta


class InclusionProof(Model):
    type: Literal["inclusion_proof"] = "inclusion_proof"
    v: int
    tenant: str
    seq: int
    leaf_index: int
    tree_size: int
    record: Annotated[AuditRecord | ConnectionAuditRecord, Field(discriminator="phase")]
    audit_path: list[str]
    checkpoint: str
