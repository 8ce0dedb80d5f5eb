"""``SandboxConfig`` (what the server tells the sandbox manager) and the workspace layout it implies.

Plain pydantic (no environment reading here: ``server/settings.py`` is the only reader of the environment).
Tenants' workspaces are ``<data_dir>/workspaces/<tenant>/``, owned by the sandbox uid:gid so the container's
non-root user can write them, each its own quota filesystem when the policy sets one (``toolrunner.quota``);
the owner's workspace is the configured directory, used as its owner's uid:gid (root's included: the tools
then run as uid 0 without any capability, docs/workspace-quota.md §2), exempt from the quota by default.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from toolrunner.errors import InvalidTenant
from toolrunner.nosuid import guard, unguard
from toolrunner.quota import LoopQuota, QuotaReport, QuotaSpec, unenforced

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
    # OPENANALYST_DOCKER_HOSTS (toolrunner.engine_list): the engines tenants are spread over; None: the one
    # engine the Docker CLI would use (DOCKER_HOST, else the local socket).
    docker_hosts: str | None = None
    start_timeout_s: float = Field(default=20.0, gt=0)  # create → runner hello
    call_grace_s: float = Field(default=5.0, ge=0)  # beyond a call's own timeout before the host gives up
    # While a call waits on the runner, a runner that sends no frame at all for this long after a ping is
    # declared unresponsive (stopped, wedged, dead behind an open stream): its calls fail with
    # SANDBOX_UNRESPONSIVE and its container is replaced.
    unresponsive_after_s: float = Field(default=30.0, gt=0)
    # The owner's workspace is a person's own directory: exempt from the policy's disk quota unless this is set
    # (then it too becomes a loop-mounted filesystem, its existing files moved into it).
    owner_workspace_quota: bool = False
    # Capacity (docs/sandbox-faults.md): at most this many tenants' containers run at once (the owner's is
    # not counted, so tenants can never lock the owner out); at the cap the least recently used idle one is
    # stopped, and with none idle a new one is refused with SANDBOX_CAPACITY and this Retry-After.
    max_live_containers: int = Field(default=16, ge=1)
    # Stopped containers kept for a quick restart; beyond this the oldest is removed (its workspace stays).
    max_stopped_containers: int = Field(default=64, ge=0)
    capacity_retry_after_s: float = Field(default=5.0, gt=0)
    # A new tenant's quota image is refused (SANDBOX_DISK_FULL) when, filled, it would leave the data disk
    # less free than this; None: max(5 % of the disk, 2 GiB); 0: never refused (docs/workspace-quota.md §1).
    data_disk_reserve_mb: int | None = Field(default=None, ge=0)

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
    if not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
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
    quota: QuotaReport | None = None  # None: not asked (callers that only need the path)
    writable: bool = True  # whether the tools' uid:gid can write the workspace's top directory
    nosuid: bool | None = None  # tools run as root there: whether set-id bits are ignored on the host's path


def quota_image(config: SandboxConfig, tenant: str) -> Path:
    """Where a tenant's quota filesystem image lives: the data directory, outside every workspace."""
    return config.data_dir.resolve() / "quota" / f"{validate_tenant(tenant)}.ext4"


def _quota(config: SandboxConfig, tenant: str, path: Path, spec: QuotaSpec | None) -> QuotaReport:
    if spec is None:
        return unenforced(path, None, "the policy sets no disk quota (disk_mb)")
    if tenant == config.owner_tenant_id and not config.owner_workspace_quota:
        return unenforced(path, spec, "the owner's workspace is exempt (set OPENANALYST_OWNER_WORKSPACE_QUOTA=1 "
                                      "to enforce the policy's quota on it)")
    reserve = None if config.data_disk_reserve_mb is None else config.data_disk_reserve_mb * 1024 * 1024
    return LoopQuota(quota_image(config, tenant), path, reserve).ensure(spec)


def owner_tools_identity(config: SandboxConfig, st: os.stat_result) -> tuple[int, int, bool]:
    """The uid:gid the owner's tools run as in a directory with this stat, and whether they can write it.

    The directory's owner, so the files the agent writes stay theirs — root's included (uid 0 without any
    capability in the sandbox: the normal case of a server started as root in a container or a CI job) —
    except a root-owned directory already open to the sandbox user (e.g. mode 1777): no reason for uid 0."""
    if st.st_uid == 0 and _writable_by(st, config.sandbox_uid, config.sandbox_gid):
        return config.sandbox_uid, config.sandbox_gid, True
    return st.st_uid, st.st_gid, _writable_by(st, st.st_uid, st.st_gid)


def prepare_workspace(config: SandboxConfig, tenant: str, quota: QuotaSpec | None = None) -> WorkspacePlan:
    """Create the tenant's workspace if needed, mount its quota filesystem, and say who its tools run as.

    A tenant's workspace is made group-writable (``2770``) for the sandbox group, because each session runs
    as its own uid in that group. The owner's workspace is a person's directory whose files are theirs:
    there every session runs as its owner (isolation "shared"), so the agent can edit those files — root's
    too: a root-owned directory is used as uid 0, which the runner starts without any capability.
    """
    uid, gid = config.sandbox_uid, config.sandbox_gid
    if tenant == config.owner_tenant_id:
        path = config.owner_workspace.resolve()
        path.mkdir(parents=True, exist_ok=True)
        report = _quota(config, tenant, path, quota)
        st = path.stat()
        uid, gid, writable = owner_tools_identity(config, st)
        if not writable:
            log.warning("owner workspace %s (mode %o) is not writable even by its owner uid %d; tools can read "
                        "it but not write to it: chmod u+w %s", path, stat.S_IMODE(st.st_mode), uid, path)
        # Root's tools could leave a setuid-root file in a host directory: the host's path ignores set-id bits.
        nosuid = guard(path) if uid == 0 else None
        return WorkspacePlan(path, uid, gid, isolation_for(config, tenant), report, writable, nosuid)
    root = config.data_dir.resolve() / "workspaces"
    root.mkdir(parents=True, exist_ok=True, mode=0o711)
    path = root / validate_tenant(tenant)
    path.mkdir(exist_ok=True, mode=0o700)
    st = path.lstat()
    if not path.is_dir() or path.is_symlink():
        raise InvalidTenant(f"workspace of {tenant!r} is not a plain directory")
    report = _quota(config, tenant, path, quota)
    st = path.lstat()  # the quota filesystem's root once mounted
    if (st.st_uid, st.st_gid) != (uid, gid):
        try:
            os.chown(path, uid, gid, follow_symlinks=False)
        except PermissionError:
            # A server that is not root cannot hand the directory over: the tools use its group instead.
            uid, gid = st.st_uid, st.st_gid
    if stat.S_IMODE(path.lstat().st_mode) != 0o2770:
        # The workspace group (each session's gid) may write; others may not even look.
        os.chmod(path, 0o2770)  # noqa: S103
    return WorkspacePlan(path, uid, gid, isolation_for(config, tenant), report, True)


def workspace_path(config: SandboxConfig, tenant: str) -> Path:
    """Where a tenant's workspace is, without creating anything."""
    if tenant == config.owner_tenant_id:
        return config.owner_workspace.resolve()
    return config.data_dir.resolve() / "workspaces" / validate_tenant(tenant)


def release_workspace(config: SandboxConfig, tenant: str) -> bool:
    """Unmount the tenant's quota filesystem (its image, which holds the files, stays); True if one was."""
    path = workspace_path(config, tenant)
    if tenant == config.owner_tenant_id:
        try:
            unguard(path)
        except (OSError, subprocess.SubprocessError) as exc:  # set-id bits were stripped all the same
            log.error("%s (set-id bits stripped; the guard stays until the mount is let go)", exc)
    try:
        return LoopQuota(quota_image(config, tenant), path).release()
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("could not unmount the quota filesystem of %s: %s", tenant, exc)
        return False


def workspace_info(config: SandboxConfig, tenant: str, plan: WorkspacePlan | None,
                   spec: QuotaSpec | None) -> dict[str, object]:
    """The workspace part of ``GET /v1/sandbox``: its quota (asked, enforced, used) and whether tools can write.
    Before the tenant's first container nothing is created or mounted: the owner's directory is only looked at."""
    if plan is None or plan.quota is None:
        quota = QuotaReport(Path("."), spec, False, None, "no container yet: the quota filesystem is mounted "
                                                          "when the tenant's container starts").usage()
        if tenant != config.owner_tenant_id:
            return {"writable": True, "tools_uid": None, "tools_gid": config.sandbox_gid, "quota": quota}
        try:
            uid, gid, writable = owner_tools_identity(config, config.owner_workspace.resolve().stat())
        except OSError:  # not there yet: the server creates it, as root's or the server user's
            return {"writable": None, "quota": quota}
        return {"writable": writable, "tools_uid": uid, "tools_gid": gid, "quota": quota}
    out: dict[str, object] = {"writable": plan.writable, "tools_uid": plan.uid, "tools_gid": plan.gid,
                              "quota": plan.quota.usage()}
    if plan.nosuid is not None:
        out["nosuid"] = plan.nosuid
    return out
