"""Plug environments into the services: the store, the builder on the server's engine, the sandbox's hook."""

from __future__ import annotations

import docker

from server.environments.service import EnvironmentService
from server.environments.store import EnvironmentStore
from server.errors import NotFound
from server.services import Services
from toolrunner.envbuild import EnvironmentBuilder, Sources


def wire_environments(services: Services) -> None:
    """``services.environments``, and each sandbox call asks it which image to run in."""
    settings, sandbox = services.settings, services.sandbox_backend

    def builder() -> EnvironmentBuilder:
        client = docker.from_env(timeout=120, max_pool_size=4)
        return EnvironmentBuilder(client, Sources(settings.environment_pip_index_url,
                                                  settings.environment_npm_registry),
                                  labels=dict(settings.sandbox_labels))

    async def base_image() -> str:
        manager = await sandbox.manager()
        return str(manager.config.image)

    def session_environment(tenant_id: str, session_id: str) -> str | None:
        try:
            return services.sessions.get(tenant_id, session_id).environment
        except NotFound:  # a direct call's throwaway runner session: the tenant's default applies
            return None

    service = EnvironmentService(EnvironmentStore(services.db), builder, base_image, session_environment,
                                 max_per_tenant=settings.max_environments_per_tenant,
                                 max_builds_per_tenant=settings.max_environment_builds_per_tenant)
    services.environments = service
    services.closers.append(service.close)
    sandbox.image_for = service.image_for
