"""Typed results, mirroring the schemas of the server's OpenAPI document (same names, same fields).

Unknown fields are kept, not refused: a newer server may add fields, and an older client must still read its
answers. ``tests/client/test_client_contract.py`` fetches the live document and fails when a schema gains a
field these models lack, so drift is caught here rather than by users.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    """Base: extra fields allowed (forward compatible), instances frozen (results are values)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class PageMeta(Model):
    page: int
    per_page: int
    total: int
    total_pages: int


class TextBlock(Model):
    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(Model):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(Model):
    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str
    content: str
    is_error: bool = False


ContentBlock = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class StoredMessage(Model):
    id: str
    role: Literal["user", "assistant"]
    content: list[ContentBlock]
    created_at: str


class TodoItem(Model):
    content: str
    status: str
    active_form: str | None = None


class Session(Model):
    session_id: str
    title: str | None
    model: str | None
    system_prompt: str | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    environment: str | None = None  # the environment its tool calls run in (docs/environments.md)


class SessionSummary(Session):
    state: Literal["running", "requires_action", "idle"]


class SessionDetail(SessionSummary):
    last_seq: int
    messages: list[StoredMessage]
    todos: list[TodoItem]


class SessionPage(Model):
    data: list[SessionSummary]
    meta: PageMeta


class Interrupted(Model):
    session_id: str
    interrupted: bool


class ToolError(Model):
    code: str
    message: str


class NetworkSummary(Model):
    """A call's connections through the egress proxy (network = "allowlist")."""

    allowed: int
    denied: int
    open: int
    bytes_up: int
    bytes_down: int
    hosts: list[str]
    denied_hosts: list[str]
    more_hosts: int


class FileChange(Model):
    """A workspace file a call created, modified or deleted."""

    path: str
    change: Literal["created", "modified", "deleted"]
    size: int | None
    sha256: str | None
    size_before: int | None
    sha256_before: str | None
    between_calls: bool
    overlapping: bool


class ChangeReport(Model):
    """The workspace files a call changed (docs/changes.md)."""

    files: list[FileChange]
    total: int
    truncated: bool
    note: str | None


class ToolResult(Model):
    tool_name: str
    output: str
    exit_code: int | None
    duration_ms: float
    truncated: bool
    timed_out: bool
    limit: str | None
    error: ToolError | None
    network: NetworkSummary | None = None
    changes: ChangeReport | None = None


class ToolCallAnswer(ToolResult):
    """A direct tool call's result and its id (the id is in the audit log and the session's events)."""

    call_id: str


class ToolInfo(Model):
    name: str
    description: str
    where: Literal["sandbox", "server"]
    input_schema: dict[str, Any]
    allowed: bool
    available: bool  # offered to the model and runnable here (policy, image, backend)
    unavailable_code: str | None  # TOOL_DENIED or TOOL_UNAVAILABLE when not available
    unavailable_reason: str | None


class ToolList(Model):
    data: list[ToolInfo]


class ChatUsage(Model):
    input_tokens: int
    output_tokens: int
    cost_usd: float
    provider: str | None
    model: str | None


class ChatToolCall(Model):
    call_id: str
    id: str | None = None  # deprecated by the server: the same as call_id
    tool_name: str
    arguments: dict[str, Any]
    result: ToolResult


class ErrorDetail(Model):
    code: str
    message: str
    status: int


class ChatAnswer(Model):
    message: str
    tool_calls: list[ChatToolCall]
    usage: ChatUsage
    structured_output: dict[str, Any] | None = None
    error: ErrorDetail | None = None


class AuditRecord(Model):
    v: int
    seq: int
    ts: str
    tenant: str
    session_id: str | None
    call_id: str | None
    phase: Literal["started", "finished"]
    tool: str | None
    policy: str | None
    decision: str | None
    reason: str | None
    input: Any = None
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
    """One egress attempt through the tenant's proxy, allowed or denied (``phase`` ``connection``)."""

    v: int
    seq: int
    ts: str
    tenant: str
    session_id: str | None
    call_id: str | None
    phase: Literal["connection"]
    tool: None
    decision: Literal["allowed", "denied"]
    reason: str | None
    started_at: str | None
    method: str | None
    host: str | None
    port: int | None
    address: str | None
    rule: str | None
    limit: str | None
    error: str | None
    bytes_up: int
    bytes_down: int
    duration_ms: float
    throttled_ms: float
    prev_hash: str
    hash: str


class AuditPage(Model):
    data: list[Annotated[AuditRecord | ConnectionAuditRecord, Field(discriminator="phase")]]
    meta: PageMeta


class AuditKey(Model):
    algorithm: str
    key_name: str
    key_id: str
    public_key: str
    vkey: str
    public_key_pem: str
    origin: str


class Verification(Model):
    """The server's ``GET /v1/audit/verify`` answer, and the offline verifier's result (same fields)."""

    ok: bool
    records: int
    first_bad_seq: int | None
    reason: str | None


class Health(Model):
    status: str
    version: str
    uptime_s: float
    engines: list[dict[str, Any]] | None = None  # the sandbox's container engines: url, state, containers, capacity


class Me(Model):
    id: str
    tenant: str
    role: Literal["owner", "member"]
    created_at: str
    is_owner: bool
    tenancy: Literal["header", "single"]
