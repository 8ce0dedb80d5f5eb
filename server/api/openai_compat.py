"""OpenAI-compatible routes: ``POST /v1/chat/completions`` and ``GET /v1/models`` (docs/operations.md).

An OpenAI SDK works with only its base URL changed to ``http://host:port/v1``: the SDK's ``api_key`` is sent
as ``Authorization: Bearer`` (checked when the server requires API keys, ignored otherwise) and
``default_headers={"X-Tenant-ID": ...}`` picks the tenant, as on every other route.

Errors are our one shape, ``{"error": {"code", "message", "status"}}``: the SDK reads ``error.message`` and
``error.code`` from it and raises its typed error by status, so nothing of OpenAI's shape is missing that the
SDK needs (its ``type`` and ``param`` stay None), and every client of this server meets one error contract.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from server.api.deps import RouterDep, SettingsDep
from server.contract.openapi import COMMON, errors
from server.errors import NotFound
from server.openai_compat.answer import chunks, complete, open_answer
from server.openai_compat.contract import ChatCompletion, ChatCompletionChunk, ModelInfo, ModelList
from server.openai_compat.request import CompletionBody, to_chat_request
from server.providers.failover import ProviderRouter
from server.tenancy import Tenant, TenantDep

router = APIRouter(tags=["openai-compatible"], responses=errors(*COMMON))

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic schema with its ``$defs`` inlined (a ``#/$defs`` reference would resolve against the
    whole document)."""
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


_CHUNK = {"type": "string", "contentMediaType": "application/json",
          "contentSchema": _inline(ChatCompletionChunk.model_json_schema())}
_STREAM = {"itemSchema": {
    "type": "object", "required": ["data"], "x-openai-stream": True,
    "properties": {"data": {"anyOf": [_CHUNK, {"const": "[DONE]"}, {
        "type": "string", "contentMediaType": "application/json", "description": "A failure after part of the "
        "answer was streamed: an `ErrorBody` (the SDK raises it as APIError); the stream ends."}]}}}}
_COMPLETION_DOC: dict[int | str, dict[str, Any]] = {200: {
    "model": ChatCompletion,
    "description": "`ChatCompletion`; with `\"stream\": true`, `text/event-stream` of `data:` lines, each a "
                   "`chat.completion.chunk`, ending with `data: [DONE]` (OpenAI's stream format, no `event:` "
                   "lines).",
    "content": {"text/event-stream": _STREAM}}, **errors(502, 503)}


@router.post("/v1/chat/completions", response_model=None, responses=_COMPLETION_DOC,
             summary="OpenAI-compatible chat completion (a plain completion with failover, no server tools)")
async def chat_completions(body: CompletionBody, tenant: TenantDep, router: RouterDep,
                           settings: SettingsDep) -> JSONResponse | StreamingResponse:
    answer = await open_answer(router, tenant.id, to_chat_request(body, settings.max_output_tokens))
    if body.stream:
        return StreamingResponse(chunks(answer, body.include_usage), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    return JSONResponse(await complete(answer))


async def _models(router: ProviderRouter, tenant: Tenant) -> list[ModelInfo]:
    creds = await router.credentials(tenant.id)  # as turns see them: a signed-in openanalyst too
    models = [ModelInfo(id="default", owned_by="openanalyst")]
    for provider, model in router.plan("", creds):
        if all(m.id != model for m in models):
            models.append(ModelInfo(id=model, owned_by=provider))
    return models


@router.get("/v1/models", summary="Models the caller's configured providers serve by default")
async def list_models(router: RouterDep, tenant: TenantDep) -> ModelList:
    return ModelList(data=await _models(router, tenant))


@router.get("/v1/models/{model_id:path}", responses=errors(404), summary="One model of GET /v1/models")
async def get_model(model_id: str, router: RouterDep, tenant: TenantDep) -> ModelInfo:
    found = next((m for m in await _models(router, tenant) if m.id == model_id), None)
    if found is None:
        raise NotFound("MODEL_NOT_FOUND", f"no model {model_id[:200]!r} among this tenant's providers' defaults "
                                          "(any model a provider serves may still be requested)")
    return found
