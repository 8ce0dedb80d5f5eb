"""Drift between the client and the server's contract is caught here: the live server's /openapi.json is
fetched and every schema the client mirrors, every route it wraps and every SSE union it parses must match
the client's models field for field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from openanalyst_client import admin_models, events, models, run_models, workspace_models
from openanalyst_client.models import Model

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

# The document's schema name → the client's model (same names by design).
MIRRORED: list[type[Model]] = [
    models.PageMeta, models.TextBlock, models.ToolUseBlock, models.ToolResultBlock, models.StoredMessage,
    models.TodoItem, models.Session, models.SessionSummary, models.SessionDetail, models.SessionPage,
    models.Interrupted, models.ToolError, models.FileChange, models.ChangeReport, models.ToolResult,
    models.ToolCallAnswer, models.ToolInfo,
    models.ToolList, models.ChatUsage, models.ChatToolCall, models.ErrorDetail, models.ChatAnswer,
    models.AuditRecord, models.ConnectionAuditRecord, models.NetworkSummary,
    models.AuditPage, models.AuditKey, models.Verification, models.Health, models.Me,
    events.SnapshotEvent, events.MessageEvent, events.AssistantDeltaEvent, events.ToolCallEvent,
    events.ToolOutputEvent, events.ToolResultEvent, events.UsageEvent, events.StateEvent, events.ErrorEvent,
    events.ProviderFailure,
    admin_models.Account, admin_models.Balance, admin_models.AuthStatus, admin_models.CodeDelivery,
    admin_models.OtpChallenge, admin_models.ProviderEntry, admin_models.ProviderList, admin_models.ProviderStatus,
    admin_models.ProviderStatusList, admin_models.SandboxInfo, admin_models.SkillInfo, admin_models.SkillProblem,
    admin_models.SkillList, admin_models.SkillMatch, admin_models.SkillMatches, admin_models.SkillRunAnswer,
    admin_models.Checkpoint, admin_models.CheckpointPage, admin_models.InclusionProof,
    workspace_models.SkippedEntry, workspace_models.FileUpload, workspace_models.FileEntry,
    workspace_models.DirectoryListing, workspace_models.FileDeleted, workspace_models.Environment,
    workspace_models.EnvironmentList, workspace_models.DefaultEnvironment,
    events.EnvironmentBuildProgressEvent, events.EnvironmentBuildDoneEvent,
    events.ApprovalRequiredEvent, events.ApprovalDecisionEvent, run_models.RunLimits, run_models.RunUsage,
    run_models.RunError, run_models.Run, run_models.RunCreated, run_models.RunList, run_models.Delivery,
    run_models.DeliveryList, run_models.Approval, run_models.ApprovalList,
]

NOT_MIRRORED = {models.Model, events.Event, events.UnknownEvent}
"""The client's own bases and its catch-all for event types it does not know: no schema of the document."""


def test_every_model_is_mirrored() -> None:
    """Each model the client defines is held to a schema above (or is one of its own bases): a model added to
    the client but not to MIRRORED would otherwise drift unchecked."""
    defined = {obj for module in (models, events, admin_models, run_models, workspace_models)
               for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, Model) and obj.__module__ == module.__name__}
    assert defined - NOT_MIRRORED - set(MIRRORED) == set()


# (method, path, success status, schema of the JSON answer or None) for every route the client calls.
ROUTES: list[tuple[str, str, str, str | None]] = [
    ("get", "/health", "200", "Health"),
    ("get", "/me", "200", "Me"),
    ("post", "/sessions", "201", "Session"),
    ("get", "/sessions", "200", "SessionPage"),
    ("get", "/sessions/{session_id}", "200", "SessionDetail"),
    ("delete", "/sessions/{session_id}", "204", None),
    ("post", "/sessions/{session_id}/interrupt", "200", "Interrupted"),
    ("post", "/sessions/{session_id}/message", "200", None),
    ("get", "/sessions/{session_id}/events", "200", None),
    ("get", "/v1/tools", "200", "ToolList"),
    ("post", "/v1/tools/{name}", "200", "ToolCallAnswer"),
    ("post", "/v1/chat", "200", "ChatAnswer"),
    ("get", "/v1/audit", "200", "AuditPage"),
    ("get", "/v1/audit/export", "200", None),
    ("get", "/v1/audit/verify", "200", "Verification"),
    ("get", "/v1/audit/key", "200", "AuditKey"),
    ("get", "/v1/audit/checkpoints", "200", "CheckpointPage"),
    ("get", "/v1/audit/checkpoints/latest", "200", "Checkpoint"),
    ("get", "/v1/audit/proof", "200", "InclusionProof"),
    ("post", "/me/auth/otp/start", "200", "OtpChallenge"),
    ("post", "/me/auth/otp/verify", "200", "AuthStatus"),
    ("get", "/me/auth/status", "200", "AuthStatus"),
    ("post", "/me/auth/logout", "204", None),
    ("put", "/me/providers/openanalyst/preferred-source", "204", None),
    ("get", "/api/ai/account", "200", "Account"),
    ("get", "/me/providers", "200", "ProviderList"),
    ("put", "/me/providers/{name}", "200", "ProviderEntry"),
    ("delete", "/me/providers/{name}", "204", None),
    ("get", "/v1/providers/status", "200", "ProviderStatusList"),
    ("get", "/v1/sandbox", "200", "SandboxInfo"),
    ("delete", "/v1/sandbox", "204", None),
    ("get", "/v1/skills", "200", "SkillList"),
    ("post", "/v1/skills/match", "200", "SkillMatches"),
    ("post", "/v1/skills/execute", "200", "SkillRunAnswer"),
    ("post", "/v1/skills/{name}/run", "200", "SkillRunAnswer"),
    ("put", "/v1/files/{path}", "200", "FileUpload"),
    ("get", "/v1/files/{path}", "200", "DirectoryListing"),
    ("delete", "/v1/files/{path}", "200", "FileDeleted"),
    ("post", "/v1/environments", "202", "Environment"),
    ("get", "/v1/environments", "200", "EnvironmentList"),
    ("get", "/v1/environments/{name}", "200", "Environment"),
    ("delete", "/v1/environments/{name}", "204", None),
    ("get", "/v1/environments/default", "200", "DefaultEnvironment"),
    ("put", "/v1/environments/default", "200", "DefaultEnvironment"),
    ("get", "/v1/environments/{name}/build/events", "200", None),
    ("post", "/v1/runs", "202", "RunCreated"),
    ("get", "/v1/runs", "200", "RunList"),
    ("get", "/v1/runs/{run_id}", "200", "Run"),
    ("post", "/v1/runs/{run_id}/cancel", "200", "Run"),
    ("get", "/v1/runs/{run_id}/deliveries", "200", "DeliveryList"),
    ("post", "/sessions/{session_id}/approvals/{call_id}", "200", "Approval"),
    ("get", "/sessions/{session_id}/approvals", "200", "ApprovalList"),
]

# The document's SSE unions → the client's tables of event classes.
UNIONS = {"SessionEvent": events.SESSION_EVENTS, "ChatEvent": events.CHAT_EVENTS,
          "ToolStreamEvent": events.TOOL_STREAM_EVENTS, "EnvironmentBuildEvent": events.ENVIRONMENT_BUILD_EVENTS}

CLIENT_ONLY = {"seq"}  # the SSE id: line, not a data field


@pytest.fixture(scope="module")
def document(serve_module: Callable[..., Any]) -> dict[str, Any]:
    server = serve_module()
    answer: dict[str, Any] = httpx.get(server.base + "/openapi.json", timeout=10).json()
    return answer


def _name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


@pytest.mark.parametrize("model", MIRRORED, ids=lambda m: m.__name__)
def test_models_cover_the_documented_fields(document: dict[str, Any], model: type[Model]) -> None:
    """Each mirrored model has exactly the fields its schema declares: a field the server adds (or drops)
    fails here, and every required field of the schema is one the model reads."""
    schema = document["components"]["schemas"][model.__name__]
    declared = set(schema["properties"])
    fields = set(model.model_fields) - (CLIENT_ONLY if issubclass(model, events.Event) else set())
    assert declared - fields == set(), f"the server documents fields {model.__name__} lacks"
    assert fields - declared == set(), f"{model.__name__} has fields the server does not document"
    required = [f for f in schema.get("required", []) if f != "type"]
    for field in required:
        info = model.model_fields[field]
        assert info.is_required() or field in ("id", "input"), f"{model.__name__}.{field} is required by the server"


@pytest.mark.parametrize(("method", "path", "status", "schema"), ROUTES, ids=lambda v: str(v))
def test_wrapped_routes_exist_with_their_schemas(document: dict[str, Any], method: str, path: str, status: str,
                                                 schema: str | None) -> None:
    """Every route the client calls exists in the document, answers the status the client expects, with the
    schema the client parses it into; error answers are the one ErrorBody."""
    operation = document["paths"][path][method]
    assert status in operation["responses"]
    if schema is not None:
        content = operation["responses"][status]["content"]["application/json"]["schema"]
        assert _name(content["$ref"]) == schema
    for code, answer in operation["responses"].items():
        if code.startswith(("4", "5")):
            assert _name(answer["content"]["application/json"]["schema"]["$ref"]) == "ErrorBody"


@pytest.mark.parametrize("union", sorted(UNIONS))
def test_event_unions_match(document: dict[str, Any], union: str) -> None:
    """The client parses exactly the event types of each SSE union the document declares."""
    mapping = document["components"]["schemas"][union]["discriminator"]["mapping"]
    table = UNIONS[union]
    assert set(mapping) == set(table)
    assert {kind: _name(ref) for kind, ref in mapping.items()} == {k: c.__name__ for k, c in table.items()}


def test_auth_and_tenant_headers_are_the_documented_ones(document: dict[str, Any]) -> None:
    """The client sends a bearer token and X-Tenant-ID: the security scheme and header the document states."""
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    headers = {p["name"] for p in document["paths"]["/v1/tools"]["get"]["parameters"] if p["in"] == "header"}
    assert "X-Tenant-ID" in headers
