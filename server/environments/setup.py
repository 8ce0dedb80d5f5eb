"""Plug environments into the services: the store, the builder on the server's engine, the sandbox's hook."""

from __future__ import annotations

import docker

from server.environments.service import EnvironmentService
from server.environments.store import EnvironmentStore
from server.errors import NotFound
from server.services import Foundation
from server.tools.dispatch import ONESHOT_SESSION
from server.tools.sandbox_backend import SandboxBackend
from toolrunner.envbuild import EnvironmentBuilder, Sources


def wire_environments(foundation: Foundation, sandbox: SandboxBackend) -> EnvironmentService:
    """The environments service; each sandbox call asks it which image to run in."""
    settings = foundation.settings

    def builder() -> EnvironmentBuilder:
        client = docker.from_env(timeout=120, max_pool_size=4)
        return EnvironmentBuilder(client, Sources(settings.environment_pip_index_url,
                                                  settings.environment_npm_registry),
                                  labels=dict(settings.sandbox_labels))

    async def base_image() -> str:
        manager = await sandbox.manager()
        return str(manager.config.image)

    async def session_environment(tenant_id: str, session_id: str) -> str | None:
        if session_id.startswith(ONESHOT_SESSION):  # a direct call's throwaway runner session: never stored
            return None
        try:
            return (await foundation.sessions.get(tenant_id, session_id)).environment
        except NotFound:  # a direct call's throwaway runner session: the tenant's default applies
            return None

    service = EnvironmentService(EnvironmentStore(foundation.db), builder, base_image, session_environment,
                                 max_per_tenant=settings.max_environments_per_tenant,
                                 max_builds_per_tenant=settings.max_environment_builds_per_tenant)
    foundation.closers.append(service.close)
    sandbox.image_for = service.image_for
    return service
