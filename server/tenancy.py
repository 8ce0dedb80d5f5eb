"""Who is calling: the tenant every request acts for.

Rules (docs/server.md explains the deployments):

* no API key required, no ``X-Tenant-ID`` → the owner (tenant id ``"owner"``);
* ``X-Tenant-ID: T`` → tenant ``T`` when ``tenancy="header"`` (the default, for a trusted proxy); refused
  with 400 ``TENANT_HEADER_NOT_ALLOWED`` when ``tenancy="single"``;
* ``require_api_key`` → ``Authorization: Bearer …`` is checked first; a key bound to a tenant fixes the
  tenant and the header cannot override it; an unbound key lets the header choose (absent = owner);
* a repeated ``X-Tenant-ID`` or ``Authorization`` is 400 ``DUPLICATE_HEADER``, never "the first one wins".

``owner`` is reserved (any case): a header cannot name the owner, so a tenant can never become it.
The header takes the ids deployments use (emails, ``auth0|…``, ``org:team``); ``server.tenant_ids`` maps
each to the safe name that rows, directories and containers use (``Tenant.id``), one-to-one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Request

from server.app_services import get_services
from server.errors import BadRequest
from server.tenant_ids import HEADER_RE, tenant_name

if TYPE_CHECKING:
    from server.services import Services

OWNER_ID = "owner"
# Services by name only: server.services imports this module (through its parts), so not the other way round.
_ServicesDep = Annotated["Services", Depends(get_services)]


@dataclass(frozen=True)
class Tenant:
    """The caller's tenant; ``is_owner`` means the single-tenant owner (the server's own user)."""

    id: str
    is_owner: bool
    header: str | None = None  # the X-Tenant-ID as sent, when it differs from ``id``


OWNER = Tenant(OWNER_ID, True)

TENANT_HEADER_PATTERN = r"^(?![Oo][Ww][Nn][Ee][Rr]$)" + HEADER_RE.pattern.removeprefix("^")
"""``HEADER_RE`` without the reserved ``owner`` (any case), as the OpenAPI document states it."""

TenantHeader = Annotated[str | None, Header(
    alias="X-Tenant-ID",
    description="The tenant to act for (`tenancy=header`, behind a trusted proxy). Absent: the owner. Refused "
                "with 400 in single-tenant mode, ignored when the API key is bound to a tenant. A value outside "
                "the pattern is a 400 INVALID_TENANT_ID.",
    json_schema_extra={"pattern": TENANT_HEADER_PATTERN})]
"""Declared for the document; the value is checked by ``parse_tenant_id`` (a 400 in our shape, not a 422)."""


def parse_tenant_id(value: str) -> Tenant:
    """A header value → Tenant, or 400 INVALID_TENANT_ID."""
    if not HEADER_RE.fullmatch(value):
        raise BadRequest("INVALID_TENANT_ID",
                         "X-Tenant-ID must be 1-256 printable ASCII characters without spaces")
    if value.lower() == OWNER_ID:
        raise BadRequest("INVALID_TENANT_ID", "X-Tenant-ID 'owner' is reserved for the server's owner")
    name = tenant_name(value)
    return Tenant(name, False, None if name == value else value)


async def current_tenant(request: Request, services: _ServicesDep, x_tenant_id: TenantHeader = None) -> Tenant:
    """FastAPI dependency: resolve (and authenticate, when keys are required) the calling tenant."""
    for name in ("authorization", "x-tenant-id"):  # the middleware refuses these first; kept for in-app use
        if len(request.headers.getlist(name)) > 1:
            raise BadRequest("DUPLICATE_HEADER", f"the {name} header is given more than once; send it once")
    bound: str | None = None
    if services.settings.require_api_key:
        bound = await services.api_keys.authenticate(request.headers.get("authorization"))
    if bound is not None:
        return OWNER if bound == OWNER_ID else parse_tenant_id(bound)
    header = x_tenant_id
    if header is None:
        return OWNER
    if services.settings.tenancy == "single":
        raise BadRequest("TENANT_HEADER_NOT_ALLOWED",
                         "this server runs in single-tenant mode; remove the X-Tenant-ID header")
    return parse_tenant_id(header)


TenantDep = Annotated[Tenant, Depends(current_tenant)]
