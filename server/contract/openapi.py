"""What FastAPI cannot infer for the OpenAPI document: error answers in our shape, SSE answers with their
event unions, the bearer security scheme as the deployment really applies it.

Routes declare their errors with ``errors(404, 409)`` and their streams with ``sse(...)``; ``install``
replaces ``app.openapi`` with a builder that adds the event unions to the components and sets the security
requirement from the settings (optional where keys are not required, since the server then ignores them).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from server.contract.events import (
    EnvironmentBuildEvent,
    SessionEvent,
    ToolStreamEvent,
    TurnEvent,
    event_name,
    members,
)
from server.errors import ErrorBody

REF = "#/components/schemas/{model}"
_ERROR_REF = {"$ref": REF.format(model="ErrorBody")}
BEARER = "bearerAuth"

_WHY = {
    400: "Bad request: a malformed header (`X-Tenant-ID`, a repeated `Authorization`), JSON that does not "
         "parse, or a value the route refuses.",
    401: "An API key is required (`require_api_key`) and missing or wrong.",
    403: "The caller's policy refuses this.",
    404: "Not found (or another tenant's).",
    409: "Conflicts with the current state.",
    413: "The request body is over the size limit.",
    422: "The request does not validate (in our error shape, not FastAPI's), or its JSON is nested too deep.",
    429: "Too many calls at once; retry after `Retry-After` seconds.",
    431: "Too many or too large request headers.",
    502: "Every provider failed.",
    503: "A backend is unavailable (sandbox image or engine, audit log, provider).",
}

EVENT_UNIONS: dict[str, Any] = {"SessionEvent": SessionEvent, "ChatEvent": TurnEvent,
                                "ToolStreamEvent": ToolStreamEvent, "EnvironmentBuildEvent": EnvironmentBuildEvent}
"""Component name → the union it documents (each member's ``type`` is its SSE ``event:`` line)."""

COMMON = (400, 401, 413, 422, 431)
"""What any route of a tenant can answer before it runs: header, auth, body and validation refusals."""


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying (always on a 429; on a 503 "
                                               "when the host is at its container cap).",
                                "schema": {"type": "integer", "minimum": 1}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries: each status answered with ``ErrorBody`` (429 and 503 with ``Retry-After``)."""
    return {status: {"model": ErrorBody, "description": _WHY.get(status, "Error."),
                     **({"headers": _RETRY_AFTER} if status in (429, 503) else {})} for status in statuses}


def sse(union: str, description: str) -> dict[str, Any]:
    """The ``text/event-stream`` content of a 200, as FastAPI documents its own SSE routes (OpenAPI 3.2's
    ``itemSchema``): one SSE item per event, its ``event:`` the model's ``type`` and its ``data:`` the rest
    of the model as JSON. Each member of the union gets its own item, so an event name fixes its data."""
    if union not in EVENT_UNIONS:
        raise ValueError(f"unknown event union {union!r}")
    items = [{"type": "object", "required": ["event", "data"], "title": model.__name__,
              "properties": {
                  "event": {"const": event_name(model)},
                  "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The event's seq (session "
                                                                                 "events only)."},
                  "data": {"type": "string", "contentMediaType": "application/json",
                           "contentSchema": {"$ref": REF.format(model=model.__name__)}}}}
             for model in members(EVENT_UNIONS[union])]
    return {"description": f"{description} Events: `{union}` (each one's `type` is its SSE `event:` line, "
                           "the other fields its `data:` JSON).",
            "content": {"text/event-stream": {"itemSchema": {"oneOf": items, "x-event-union": union}}}}


def _event_components() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for name, union in EVENT_UNIONS.items():
        schema = TypeAdapter(union).json_schema(mode="serialization", ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    return schemas


def _tidy(operation: dict[str, Any]) -> None:
    """Our shape for every validation error (the handler answers no other), and no untyped JSON beside a
    stream: FastAPI adds ``application/json: {}`` for a route whose response class it cannot see through."""
    for status, response in operation.get("responses", {}).items():
        content = response.get("content", {})
        if len(content) > 1 and content.get("application/json", {}).get("schema") == {}:
            del content["application/json"]
        schema = content.get("application/json", {}).get("schema", {})
        if status == "422" and schema.get("$ref", "").endswith("/HTTPValidationError"):
            response.update(errors(422)[422] | {"content": {"application/json": {"schema": _ERROR_REF}}})
            response.pop("model", None)


LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    ("post", "/sessions", "201"): {
        "GetSession": ("get", "/sessions/{session_id}", {"session_id": "$response.body#/session_id"}),
        "InterruptSession": ("post", "/sessions/{session_id}/interrupt",
                             {"session_id": "$response.body#/session_id"}),
        "DeleteSession": ("delete", "/sessions/{session_id}", {"session_id": "$response.body#/session_id"}),
    },
    ("put", "/me/providers/{name}", "200"): {
        "DeleteProvider": ("delete", "/me/providers/{name}", {"name": "$response.body#/name"}),
    },
    ("post", "/v1/runs", "202"): {
        "GetRun": ("get", "/v1/runs/{run_id}", {"run_id": "$response.body#/run_id"}),
        "CancelRun": ("post", "/v1/runs/{run_id}/cancel", {"run_id": "$response.body#/run_id"}),
    },
}
"""OpenAPI links from an operation that makes a resource to those that read or end it: clients (and
schemathesis' stateful tests) follow them with the id the first answer carries. Long-lived streams are left
out on purpose; links whose operations a server lacks are not written."""


def _links(doc: dict[str, Any]) -> None:
    paths = doc.get("paths", {})

    def operation_id(method: str, path: str) -> str | None:
        found = paths.get(path, {}).get(method)
        return None if found is None else str(found.get("operationId"))

    for (method, path, status), links in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        written = {name: {"operationId": op_id, "parameters": parameters}
                   for name, (target_method, target_path, parameters) in links.items()
                   if (op_id := operation_id(target_method, target_path)) is not None
                   and all(f"{{{p}}}" in target_path for p in parameters)}
        if written:
            response["links"] = written


def install(app: FastAPI, *, require_api_key: bool, single_tenant: bool = False) -> None:
    """Build the document once, on first request of ``/openapi.json``, with the parts FastAPI cannot infer.

    A single-tenant server refuses ``X-Tenant-ID`` (400), so its document does not offer the parameter."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = doc.setdefault("components", {})
        for name, schema in _event_components().items():
            components.setdefault("schemas", {}).setdefault(name, schema)
        components.setdefault("securitySchemes", {})[BEARER] = {
            "type": "http", "scheme": "bearer", "bearerFormat": "oak_<id>_<secret>",
            "description": "An API key (`openanalyst keys create`); required only when the server runs with "
                           "`require_api_key`, ignored otherwise."}
        required: list[dict[str, list[str]]] = [{BEARER: []}]
        for path, item in doc.get("paths", {}).items():
            for operation in item.values():
                _tidy(operation)
                if single_tenant:
                    operation["parameters"] = [p for p in operation.get("parameters", [])
                                               if p["name"] != "X-Tenant-ID"]
                    if not operation["parameters"]:
                        del operation["parameters"]
                if path != "/health":
                    operation["security"] = required if require_api_key else [{}, *required]
        for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's shape, answered by no route
            components.get("schemas", {}).pop(name, None)
        components.setdefault("schemas", {}).setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template=REF))
        _links(doc)
        app.openapi_schema = doc
        return doc

    app.openapi = build  # type: ignore[method-assign]
