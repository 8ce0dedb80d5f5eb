"""``SandboxConfig`` (what the server tells the sandbox manager) and the workspace layout it implies.

Plain pydantic (no environment reading here: ``server/settings.py`` is the only reader of the environment).
Tenants' workspaces are ``<data_dir>/workspaces/<tenant>/``, owned by the sandbox uid:gid so the container's
non-root user can write them; the owner's workspace is the configured directory, used as its owner's uid:gid.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from toolrunner.errors import InvalidTenant

log = logging.getLogger(__name__)
TENANT_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")


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
    extra_labels: dict[str, str] = Field(default_factory=dict)  # e.g. {"openanalyst.test": "1"} in tests
    runner_command: list[str] | None = None  # None: the image's ENTRYPOINT/CMD starts the runner
    docker_timeout_s: float = Field(default=30.0, gt=0)  # deadline on every engine call
    start_timeout_s: float = Field(default=20.0, gt=0)  # create → runner hello
    call_grace_s: float = Field(default=5.0, ge=0)  # beyond a call's own timeout before the host gives up
    # While a call waits on the runner, a runner that sends no frame at all for this long after a ping is
    # declared unresponsive (stopped, wedged, dead behind an open stream): its calls fail with
    # SANDBOX_UNRESPONSIVE and its container is replaced.
    unresponsive_after_s: float = Field(default=30.0, gt=0)
    # Capacity (docs/sandbox-faults.md): at most this many tenants' containers run at once (the owner's is
    # not counted, so tenants can never lock the owner out); at the cap the least recently used idle one is
    # stopped, and with none idle a new one is refused with SANDBOX_CAPACITY and this Retry-After.
    max_live_containers: int = Field(default=16, ge=1)
    # Stopped containers kept for a quick restart; beyond this the oldest is removed (its workspace stays).
    max_stopped_containers: int = Field(default=64, ge=0)
    capacity_retry_after_s: float = Field(default=5.0, gt=0)

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


def validate_tenant(tenant: str) -> str:
    """The tenant id if it is safe as a directory name and label value, else ``InvalidTenant``."""
    if not isinstance(tenant, str) or not TENANT_ID.match(tenant):
        raise InvalidTenant(f"tenant id {tenant!r} must match {TENANT_ID.pattern}")
    return tenant


def _writable_by(st: os.stat_result, uid: int, gid: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & 0o200)
    if st.st_gid == gid:
        return bool(st.st_mode & 0o020)
    return bool(st.st_mode & 0o002)


def isolation_for(config: SandboxConfig, tenant: str) -> str:
    """"shared" for the owner's workspace (a person's files, one uid for all sessions), else "uid"."""
    return "shared" if tenant == config.owner_tenant_id else "uid"


class WorkspacePlan(NamedTuple):
    """Where a tenant's workspace is and who its tool processes run as (docs/runner-trust.md §1)."""

    path: Path
    uid: int  # the tools' uid with isolation "shared"
    gid: int  # the tools' group, which can write the workspace
    isolation: str  # "uid": a uid per session; "shared": every session as `uid`


def prepare_workspace(config: SandboxConfig, tenant: str) -> WorkspacePlan:
    """Create the tenant's workspace if needed and say who its tool processes run as.

    A tenant's workspace is made group-writable (``2770``) for the sandbox group, because each session runs
    as its own uid in that group. The owner's workspace is a person's directory whose files are theirs:
    there every session runs as its owner (isolation "shared"), so the agent can edit those files.
    """
    uid, gid = config.sandbox_uid, config.sandbox_gid
    if tenant == config.owner_tenant_id:
        path = config.owner_workspace.resolve()
        path.mkdir(parents=True, exist_ok=True)
        st = path.stat()
        if st.st_uid != 0:
            # Files the agent writes stay the owner's.
            return WorkspacePlan(path, st.st_uid, st.st_gid, isolation_for(config, tenant))
        if not _writable_by(st, uid, gid):
            log.warning("owner workspace %s belongs to root and is not writable by the sandbox user %d:%d; "
                        "tools can read it but not write to it", path, uid, gid)
        return WorkspacePlan(path, uid, gid, isolation_for(config, tenant))
    root = config.data_dir.resolve() / "workspaces"
    root.mkdir(parents=True, exist_ok=True, mode=0o711)
    path = root / validate_tenant(tenant)
    path.mkdir(exist_ok=True, mode=0o700)
    st = path.lstat()
    if not path.is_dir() or path.is_symlink():
        raise InvalidTenant(f"workspace of {tenant!r} is not a plain directory")
    if (st.st_uid, st.st_gid) != (uid, gid):
        try:
            os.chown(path, uid, gid, follow_symlinks=False)
        except PermissionError:
            # A server that is not root cannot hand the directory over: the tools use its group instead.
            uid, gid = st.st_uid, st.st_gid
    if stat.S_IMODE(path.lstat().st_mode) != 0o2770:
        # The workspace group (each session's gid) may write; others may not even look.
        os.chmod(path, 0o2770)  # noqa: S103
    return WorkspacePlan(path, uid, gid, isolation_for(config, tenant))
