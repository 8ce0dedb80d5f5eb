"""Provider credentials of the calling tenant: list (masked), add/replace, remove.

A tenant's ``base_url`` is checked here (422 ``PROVIDER_URL_FORBIDDEN`` / ``PROVIDER_URL_UNRESOLVED``) and
again at every connection (``server.providers.guarded_http``); the owner's is not."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.api.deps import ServicesDep, TenantDep
from server.contract.account import ProviderEntry, ProviderList
from server.contract.openapi import COMMON, errors
from server.errors import Unprocessable
from server.providers.registry import PROVIDERS
from server.providers.urlguard import check_base_url, parse_base_url, url_to_check
from server.store.credentials import check_known

router = APIRouter(tags=["providers"], responses=errors(*COMMON))


KEY_PATTERN = r"^[ \t\r\n]*[!-~]+[ \t\r\n]*$"
"""Printable ASCII without spaces (a key travels in an HTTP header), blanks around it forgiven (a paste)."""
URL_PATTERN = r"^$|^https?://[!-.0-~][!-~]*$"
"""An http(s) URL of printable ASCII, or empty for the provider's default."""


class ProviderKeyBody(BaseModel):
    """The patterns are the whole check, so the OpenAPI document states exactly what is accepted."""

    model_config = ConfigDict(extra="forbid", strict=True)

    api_key: str | None = Field(default=None, min_length=1, max_length=8192, pattern=KEY_PATTERN,
                                description="Required except for ollama, which a base_url alone adds.")
    base_url: str | None = Field(default=None, max_length=2048, pattern=URL_PATTERN)

    @field_validator("api_key")
    @classmethod
    def _strip(cls, key: str | None) -> str | None:
        return key.strip(" \t\r\n") if key is not None else None

    @field_validator("base_url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        return url.rstrip("/") if url else None


@router.get("/me/providers")
async def list_providers(tenant: TenantDep, services: ServicesDep) -> ProviderList:
    return ProviderList(data=[ProviderEntry(**e.public()) for e in await services.credentials.list(tenant.id)])


@router.put("/me/providers/{name}", responses=errors(404))
async def put_provider(name: str, body: ProviderKeyBody, tenant: TenantDep,
                       services: ServicesDep) -> ProviderEntry:
    check_known(name)
    if body.api_key is None and (PROVIDERS[name].key_env or not body.base_url):
        raise Unprocessable("API_KEY_REQUIRED", f"{name} needs an api_key" if PROVIDERS[name].key_env
                            else f"{name} without an api_key needs its base_url")
    if body.base_url:  # the owner's URL is trusted, but must still be one httpx can use (IDNA decodes)
        parse_base_url(body.base_url)
    url = url_to_check(body.base_url, PROVIDERS[name].base_url)
    if url and not tenant.is_owner:  # the owner's own configuration is trusted, as the environment's is
        await check_base_url(url, services.settings.provider_url_policy())
    entry = await services.credentials.put(tenant.id, name, body.api_key, body.base_url)
    return ProviderEntry(**entry.public())


@router.delete("/me/providers/{name}", status_code=204, responses=errors(404, 409))
async def delete_provider(name: str, tenant: TenantDep, services: ServicesDep) -> Response:
    check_known(name)
    await services.credentials.delete(tenant.id, name)
    return Response(status_code=204)
