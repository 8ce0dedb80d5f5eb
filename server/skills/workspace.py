"""Where a tenant's workspace is on the host, and making sure its files are there to read.

A tenant whose policy sets a disk quota keeps its files in a loop-mounted filesystem image
(docs/workspace-quota.md), mounted at the workspace path only while the sandbox manager holds it. Reading
the bare mount point then would show an empty directory, i.e. silently no skills. So when the image exists
and is not mounted, the tenant's container is started through the manager (``ensure_started``: its one
locked path, which mounts the filesystem exactly as a tool call would); if that fails, the tenant's skills
are reported unavailable with the reason, and the server's skills are still listed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from server.settings import Settings
from server.skills.catalog import TenantRoot
from server.tenancy import OWNER_ID
from toolrunner.config import SandboxConfig, quota_image, workspace_path
from toolrunner.errors import InvalidTenant

log = logging.getLogger(__name__)
MOUNT_WAIT_S = 60.0


def _layout(settings: Settings) -> SandboxConfig:
    """Only the workspace layout of the sandbox config (no image is involved in finding a path)."""
    return SandboxConfig(data_dir=settings.data_dir, image="layout-only", owner_workspace=settings.owner_workspace,
                         owner_tenant_id=OWNER_ID, owner_workspace_quota=settings.owner_workspace_quota)


def _needs_mount(config: SandboxConfig, tenant_id: str, path: Path) -> bool:
    if tenant_id == config.owner_tenant_id and not config.owner_workspace_quota:
        return False
    return quota_image(config, tenant_id).exists() and not os.path.ismount(path)


class WorkspaceRoots:
    """``await roots(tenant_id)`` → the tenant's ``TenantRoot``, mounting its quota filesystem if needed."""

    def __init__(self, settings: Settings, sandbox_backend: Any) -> None:
        self._config = _layout(settings)
        self._sandbox = sandbox_backend

    async def __call__(self, tenant_id: str) -> TenantRoot:
        try:
            path = workspace_path(self._config, tenant_id)
        except InvalidTenant as exc:  # not a name the sandbox takes: it has no workspace to read
            return TenantRoot(Path("/nonexistent"), False, str(exc))
        if not await asyncio.to_thread(_needs_mount, self._config, tenant_id, path):
            return TenantRoot(path)
        try:
            manager = await asyncio.wait_for(self._sandbox.manager(), MOUNT_WAIT_S)
            await asyncio.wait_for(manager.ensure_started(tenant_id), MOUNT_WAIT_S)
        except Exception as exc:  # SandboxError, ApiError, a timeout: the API stays up whatever the engine does
            reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            log.warning("skills of %s unavailable: its workspace is not mounted (%s)", tenant_id, reason)
            return TenantRoot(path, False, "the tenant's workspace filesystem is not mounted and its sandbox "
                                           f"could not be started to mount it: {reason}")
        if await asyncio.to_thread(_needs_mount, self._config, tenant_id, path):
            return TenantRoot(path, False, "the tenant's workspace filesystem is not mounted")
        return TenantRoot(path)
