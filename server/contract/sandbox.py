"""Response model of ``GET /v1/sandbox``: the tenant's container, its limits, workspace and image build.

The parts come from the toolrunner (``SandboxManager.info``, ``workspace_info``, ``QuotaReport.usage``,
``DockerBackend.usage``) and the server (``ImageStatus.snapshot``); the model is where their shape is stated
once. Which fields are present depends on ``state`` (see each field)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from policies.network import NetworkMode
from server.contract.common import Model
from server.tools.image_status import ImageState


class Limits(Model):
    cpus: float
    memory_mb: int
    pids: int
    tmpfs_mb: int
    network: NetworkMode
    max_concurrent_calls: int
    default_timeout_s: float
    max_timeout_s: float
    output_cap_bytes: int


class Egress(Model):
    """The effective allow-list under `network = allowlist` (presets expanded) and the proxy's limits."""

    presets: list[str]
    allow: list[str]
    deny: list[str]
    max_connections: int | None
    bandwidth_kbps: int | None
    max_connection_s: float | None
    connections_per_s: float | None = Field(default=None, description="New connections a second the proxy "
                                            "accepts from this tenant (a burst of max_connections at once).")


class Quota(Model):
    enforced: bool
    mechanism: Literal["loop-ext4"] | None
    bytes: int | None
    inodes: int | None
    used_bytes: int | None
    used_inodes: int | None
    free_bytes: int | None
    free_inodes: int | None
    reason: str | None = Field(description="Why the quota is not enforced, when it is not.")


class Workspace(Model):
    writable: bool | None = Field(description="Whether tools may write there (null: not known yet).")
    tools_uid: int | None = None
    tools_gid: int | None = None
    nosuid: bool | None = Field(default=None, description="The owner's workspace guard, when one is set.")
    quota: Quota


class Usage(Model):
    """One `docker stats` sample of the running container."""

    memory_bytes: int | None
    memory_rss_bytes: int | None
    memory_cache_bytes: int | None
    memory_limit_bytes: int | None
    pids: int | None
    cpu_total_s: float


class ImageBuild(Model):
    state: ImageState
    tag: str | None
    error: str | None
    started_at: str | None
    finished_at: str | None
    elapsed_s: float | None = Field(description="While checking or building.")
    progress: list[str] = Field(description="The build's last lines.")


class Held(Model):
    """What the stopped container's runner held (asked before an eviction)."""

    sessions: int | None = None
    calls: int | None = None
    repls: int | None = None
    background: int | None = None


class LastStop(Model):
    """The tenant's last container stop that lost its sessions' state (toolrunner.losses)."""

    at: str = Field(description="RFC 3339 UTC.")
    reason: Literal["evicted", "idle", "died", "removed"]
    message: str
    container_id: str
    held: Held | None = Field(description="What its runner held just before an eviction; null otherwise.")
    sessions: int = Field(description="Sessions that had run a call in it: each is told SESSION_STATE_LOST once.")


class Engine(Model):
    """A container engine sandboxes run on (``OPENANALYST_DOCKER_HOSTS``; docs/scale-out.md). Its address and
    state are shown to every caller; how full it is and why it is down only to the owner (a tenant would learn
    how many others are active, and an engine's error text names the host's own files and addresses)."""

    url: str = Field(description="Its address, without secrets (TLS files and ssh keys are configured apart).")
    state: Literal["up", "down"]
    containers: int | None = Field(description="This server's containers on it, running or stopped (the "
                                               "owner's view only; null for tenants and on /health).")
    capacity: int | None = Field(description="At most this many of them (null: no bound of its own, or not the "
                                             "owner's view).")
    error: str | None = Field(description="Why it is down (the owner's view only).")

    def public(self) -> Engine:
        """The view for a tenant and the unauthenticated ``/health``: address and state."""
        return self.model_copy(update={"containers": None, "capacity": None, "error": None})


class SandboxInfo(Model):
    """`waiting_for_image` carries only tenant, state, container_id and image_build; the other states the
    rest (`started_at`, `idle_s` and `usage` when running)."""

    tenant: str
    state: str = Field(description="`waiting_for_image`, `absent`, `stopped`, or the engine's container "
                                   "status (`running`, `paused`, ...).")
    container_id: str | None
    image_build: ImageBuild
    policy: str | None = None
    image: str | None = None
    image_id: str | None = None
    limits: Limits | None = None
    egress: Egress | None = None
    calls_in_flight: int | None = None
    workspace: Workspace | None = None
    started_at: str | None = None
    idle_s: float | None = None
    usage: Usage | None = None
    last_stop: LastStop | None = Field(default=None, description="When and why the tenant's container last "
                                                                 "stopped, losing shell, REPL and background state.")
    engine: str | None = Field(default=None, description="The engine the running container is on, when "
                                                         "OPENANALYST_DOCKER_HOSTS lists several.")
    engines: list[Engine] | None = Field(default=None, description="Every engine and its state (null while the "
                                                                   "sandbox is coming up).")
