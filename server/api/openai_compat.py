"""OpenAI-compatible routes: ``POST /v1/chat/completions`` and ``GET /v1/models`` (docs/operations.md).

An OpenAI SDK works with only its base URL changed to ``http://host:port/v1``: the SDK's ``api_key`` is sent
as ``Authorization: Bearer`` (checked when the server requires API keys, ignored otherwise) and
``default_headers={"X-Tenant-ID": ...}`` picks the tenant, as on every other route.

Errors raised by these routes keep our body ``{"error": {"code", "message", "status"}}`` and add OpenAI's
``type`` and ``param``, so the SDK's ``error.message`` / ``error.code`` / ``error.type`` are all filled; a
body OpenAI would refuse is a 400 ``invalid_request_error`` here too (not our usual 422), so the body is
validated in the route, not by FastAPI, and its schema is given to OpenAPI by hand. Errors from before the
route (authentication, a bad ``X-Tenant-ID``, the body limits) are our plain shape: the SDK reads their
``message`` and ``code`` all the same.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from server.errors import ApiError, BadRequest, NotFound
from server.openai_compat.answer import chunks, complete, open_answer
from server.openai_compat.request import CompletionBody, to_chat_request
from server.providers.registry import PROVIDERS
from server.tenancy import Tenant, TenantDep

router = APIRouter(tags=["openai-compatible"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}


def openai_error(exc: ApiError) -> JSONResponse:
    """Our error body plus OpenAI's ``type`` and ``param``."""
    body = exc.body()
    body["error"] |= {"type": _TYPES.get(exc.status, "server_error" if exc.status >= 500 else "api_error"),
                      "param": None}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers or None)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic schema with its ``$defs`` inlined (OpenAPI resolves ``#/$defs`` against the document)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.rsplit("/", 1)[1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


_BODY_DOC = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inline(CompletionBody.model_json_schema())}}}}


async def _body(request: Request) -> CompletionBody:
    raw = await request.body()
    try:
        return CompletionBody.model_validate_json(raw or b"null")
    except ValidationError as exc:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            raise BadRequest("MALFORMED_JSON", "the request body is not valid JSON") from None
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg', 'invalid')}"
                 for e in errors[:10]]
        raise BadRequest("VALIDATION_ERROR", "; ".join(parts)) from None


@router.post("/v1/chat/completions", response_model=None, openapi_extra=_BODY_DOC,
             summary="OpenAI-compatible chat completion (plain completion with failover, no server tools)")
async def chat_completions(request: Request, tenant: TenantDep) -> Response:
    try:
        body = await _body(request)
        services = request.app.state.services
        chat = to_chat_request(body, services.settings.max_output_tokens)
        answer = await open_answer(services.router, tenant.id, chat)
    except ApiError as exc:
        return openai_error(exc)
    if body.stream:
        return StreamingResponse(chunks(answer, body.include_usage), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    try:
        return JSONResponse(await complete(answer))
    except ApiError as exc:
        return openai_error(exc)


async def _models(request: Request, tenant: Tenant) -> list[dict[str, Any]]:
    services = request.app.state.services
    creds = {k: v for k, v in (await services.credentials.credentials(tenant.id)).items() if k in PROVIDERS}
    models = [{"id": "default", "object": "model", "created": 0, "owned_by": "openanalyst"}]
    seen = {"default"}
    for provider, model in services.router.plan("", creds):
        if model not in seen:
            seen.add(model)
            models.append({"id": model, "object": "model", "created": 0, "owned_by": provider})
    return models


@router.get("/v1/models", response_model=None, summary="Models the caller's configured providers serve")
async def list_models(request: Request, tenant: TenantDep) -> Response:
    try:
        return JSONResponse({"object": "list", "data": await _models(request, tenant)})
    except ApiError as exc:
        return openai_error(exc)


@router.get("/v1/models/{model_id:path}", response_model=None, summary="One model of GET /v1/models")
async def get_model(model_id: str, request: Request, tenant: TenantDep) -> Response:
    try:
        found = next((m for m in await _models(request, tenant) if m["id"] == model_id), None)
        if found is None:
            raise NotFound("MODEL_NOT_FOUND", f"no model {model_id[:200]!r} among this tenant's providers' "
                                              "defaults (any model a provider serves may still be requested)")
        return JSONResponse(found)
    except ApiError as exc:
        return openai_error(exc)


__all__ = ["openai_error", "router"]
