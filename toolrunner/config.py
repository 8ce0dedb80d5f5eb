"""``SandboxConfig``: what the server tells the sandbox manager, filled from its own settings.

Plain pydantic (no environment reading here: ``server/settings.py`` is the only reader of the environment).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


def _default_owner_workspace() -> Path:
    return Path.cwd()


class SandboxConfig(BaseModel):
    """Where workspaces live, which image runs, and the manager's timings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path
    image: str  # e.g. "openanalyst/sandbox:<hash12>" from toolrunner.image.ensure_sandbox_image
    owner_workspace: Path = Field(default_factory=_default_owner_workspace)
    owner_tenant_id: str = "owner"
    idle_timeout_s: float = Field(default=900.0, gt=0)
    # Pre-created containers cannot serve a tenant (the workspace bind is fixed at create), so the manager
    # hides start-up with prestart() instead; kept for the settings contract, must stay 0 for now.
    warm_pool_size: int = Field(default=0, ge=0, le=0)
    runtime: str | None = None  # "runc" | "runsc" | None (engine default); overrides the policy's runtime
    server_id: str | None = None  # labels our containers; None: derived from data_dir, stable across restarts
    sandbox_uid: int = Field(default=1000, ge=1)
    sandbox_gid: int = Field(default=1000, ge=1)
    runner_command: list[str] | None = None  # None: the image's ENTRYPOINT/CMD starts the runner
    docker_timeout_s: float = Field(default=30.0, gt=0)  # deadline on every engine call
    start_timeout_s: float = Field(default=20.0, gt=0)  # create → runner hello
    call_grace_s: float = Field(default=5.0, ge=0)  # beyond a call's own timeout before the host gives up

    @property
    def instance_id(self) -> str:
        """This server's label value: containers of other instances are never touched."""
        if self.server_id:
            return self.server_id
        return hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]

    @property
    def image_hash(self) -> str:
        """The content hash in the image tag; a container made from another hash runs an old runner."""
        return self.image.rsplit(":", 1)[-1] if ":" in self.image.rsplit("/", 1)[-1] else self.image
