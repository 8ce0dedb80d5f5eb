"""Provider credentials of the calling tenant: list (masked), add/replace, remove.

A tenant's ``base_url`` is checked here (422 ``PROVIDER_URL_FORBIDDEN`` / ``PROVIDER_URL_UNRESOLVED``) and
again at every connection (``server.providers.guarded_http``); the owner's is not."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.api.deps import ServicesDep, TenantDep
from server.providers.registry import PROVIDERS
from server.providers.urlguard import check_base_url, url_to_check
from server.store.credentials import check_known

router = APIRouter(tags=["providers"])


class ProviderKeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(min_length=1, max_length=8192)
    base_url: str | None = Field(default=None, max_length=2048)

    @field_validator("api_key")
    @classmethod
    def _not_blank(cls, key: str) -> str:
        key = key.strip()
        if not key:
            raise ValueError("must not be empty")
        if any(c.isspace() for c in key):
            raise ValueError("must not contain whitespace")
        return key

    @field_validator("base_url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is None or url == "":
            return None
        if not (url.startswith(("http://", "https://")) and len(url) > 8 and " " not in url):
            raise ValueError("must be an http(s) URL")
        return url.rstrip("/")


@router.get("/me/providers")
async def list_providers(tenant: TenantDep, services: ServicesDep) -> dict[str, Any]:
    return {"data": [e.public() for e in services.credentials.list(tenant.id)]}


@router.put("/me/providers/{name}")
async def put_provider(name: str, body: ProviderKeyBody, tenant: TenantDep,
                       services: ServicesDep) -> dict[str, Any]:
    check_known(name)
    url = url_to_check(body.base_url, PROVIDERS[name].base_url)
    if url and not tenant.is_owner:  # the owner's own configuration is trusted, as the environment's is
        await check_base_url(url, services.settings.provider_url_policy())
    entry = await services.credentials.put(tenant.id, name, body.api_key, body.base_url)
    return entry.public()


@router.delete("/me/providers/{name}", status_code=204)
async def delete_provider(name: str, tenant: TenantDep, services: ServicesDep) -> Response:
    check_known(name)
    await services.credentials.delete(tenant.id, name)
    return Response(status_code=204)
