"""The one reader of ``app.state.services``: a FastAPI dependency that sits below ``server.tenancy`` and
``server/api`` (``server.services`` imports both through its parts, so it is named here only for typing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from server.errors import ServiceUnavailable

if TYPE_CHECKING:
    from server.services import Services


def get_services(request: Request) -> Services:
    """The app's services (``server.app.build_app`` sets them); 503 while its lifespan has not run."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise ServiceUnavailable("SERVER_STARTING", "the server is starting or stopping; try again")
    return services
