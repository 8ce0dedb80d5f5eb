"""Shared route dependencies as ``Annotated`` aliases, declared once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.services import Services
from server.tenancy import Tenant, TenantDep

__all__ = ["ServicesDep", "Tenant", "TenantDep"]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
