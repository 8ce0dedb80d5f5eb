"""The OpenAPI document as the app builds it: our error shape, the security requirement the deployment
really applies, the X-Tenant-ID parameter and its pattern, typed answers that match what the routes send."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
import pytest

from server.app import build_app
from server.errors import ApiError, ErrorBody, TooManyRequests, error_body
from server.settings import Settings
from server.tenancy import TENANT_HEADER_PATTERN

pytestmark = pytest.mark.anyio


def validator(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                            "components": doc["components"]})


async def test_validation_error_documented_and_answered_in_our_shape(client: httpx.AsyncClient) -> None:
    """A 422 is documented as ErrorBody (not FastAPI's HTTPValidationError) and the real 422 body fits it."""
    doc = (await client.get("/openapi.json")).json()
    documented = doc["paths"]["/sessions"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert documented == {"$ref": "#/components/schemas/ErrorBody"}
    assert "HTTPValidationError" not in str(doc)
    answer = await client.post("/sessions", json={"title": 5})
    assert answer.status_code == 422
    validator(doc, "ErrorBody").validate(answer.json())


def test_error_body_model_is_what_every_error_sends() -> None:
    """ApiError.body() and error_body() (SSE errors, middleware refusals) both fit the ErrorBody model."""
    for body in (ApiError("X_Y", "m", status=409).body(), error_body("A", "b", 503),
                 TooManyRequests("TOO_MANY_CALLS", "busy", retry_after_s=2).body()):
        assert ErrorBody.model_validate(body).model_dump() == body


async def test_bearer_is_optional_unless_keys_are_required(make_settings: Callable[..., Settings],
                                                           run_app: Any) -> None:
    """Without require_api_key the document says auth is optional (the server ignores keys); with it,
    every route but /health requires the bearer scheme, and a keyless call is the documented 401."""
    for require, expected in ((False, [{}, {"bearerAuth": []}]), (True, [{"bearerAuth": []}])):
        app = build_app(make_settings(require_api_key=require))
        async with run_app(app) as client:
            doc = (await client.get("/openapi.json")).json()
            assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
            assert doc["paths"]["/sessions"]["get"]["security"] == expected
            assert "security" not in doc["paths"]["/health"]["get"]
            if require:
                refused = await client.get("/sessions")
                assert refused.status_code == 401 and "401" in doc["paths"]["/sessions"]["get"]["responses"]
                validator(doc, "ErrorBody").validate(refused.json())


async def test_tenant_header_declared_with_the_enforced_pattern(client: httpx.AsyncClient) -> None:
    """X-Tenant-ID is a documented header of tenant routes; its pattern accepts what the server accepts
    and excludes the reserved owner, whose use is a 400 INVALID_TENANT_ID."""
    doc = (await client.get("/openapi.json")).json()
    [header] = [p for p in doc["paths"]["/me"]["get"]["parameters"] if p["name"] == "X-Tenant-ID"]
    assert header["in"] == "header" and header["required"] is False
    pattern = header["schema"]["pattern"]
    assert pattern == TENANT_HEADER_PATTERN
    for value, accepted in (("team-a", True), ("a.b_c-1", True), ("OWNER", False), (".hidden", True),
                            ("x" * 256, True), ("x" * 257, False), ("a b", False), ("owner2", True),
                            ("alice@example.com", True)):
        assert bool(re.match(pattern, value)) is accepted, value
        answer = await client.get("/me", headers={"X-Tenant-ID": value})
        assert answer.status_code == (200 if accepted else 400), (value, answer.text)


async def test_typed_answers_fit_their_schemas(client: httpx.AsyncClient) -> None:
    """What /health, /me, the session routes and /v1/tools answer validates against their documented models."""
    doc = (await client.get("/openapi.json")).json()
    created = await client.post("/sessions", json={"title": "t", "metadata": {"k": 1}})
    sid = created.json()["session_id"]
    for path, name in (("/health", "Health"), ("/me", "Me"), ("/api/ai/account", "Account"),
                       ("/me/auth/status", "AuthStatus"), ("/me/providers", "ProviderList"),
                       ("/sessions", "SessionPage"), (f"/sessions/{sid}", "SessionDetail")):
        answer = await client.get(path)
        assert answer.status_code == 200, path
        validator(doc, name).validate(answer.json())
    validator(doc, "Session").validate(created.json())
    interrupted = await client.post(f"/sessions/{sid}/interrupt")
    validator(doc, "Interrupted").validate(interrupted.json())
    assert interrupted.json() == {"session_id": sid, "interrupted": False}


async def test_single_tenant_document_offers_no_tenant_header(make_settings: Callable[..., Settings],
                                                              run_app: Any) -> None:
    """A single-tenant server refuses X-Tenant-ID with a 400, so its document does not declare it."""
    async with run_app(build_app(make_settings(tenancy="single"))) as client:
        doc = (await client.get("/openapi.json")).json()
        names = {p["name"] for item in doc["paths"].values() for op in item.values()
                 for p in op.get("parameters", [])}
        assert "X-Tenant-ID" not in names and "session_id" in names
        refused = await client.get("/me", headers={"X-Tenant-ID": "team-a"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "TENANT_HEADER_NOT_ALLOWED"
