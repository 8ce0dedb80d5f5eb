"""The one reader of ``app.state.services``: a FastAPI dependency that sits below ``server.tenancy`` and
``server/api`` (``server.services`` imports both through its parts, so it is named here only for typing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from server.errors import ServiceUnavailable

if TYPE_CHECKING:
    from server.services import Services


async def get_services(request: Request) -> Services:
    """The app's services (``server.app.build_app`` sets them); 503 while its lifespan has not run.

    ``async`` although it awaits nothing: FastAPI runs a plain ``def`` dependency in its worker-thread pool,
    a thread hop per request (and a queue for its 40 threads under load) for an attribute read."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise ServiceUnavailable("SERVER_STARTING", "the server is starting or stopping; try again")
    return services
