"""``ContainerRuntime``: everything the sandbox manager asks of a container engine, and nothing more.

The manager, the leftover sweeper and the server's metrics see only this protocol. ``DockerBackend`` is one
engine behind it (unix socket, TCP with TLS, or SSH); ``EngineSet`` spreads tenants over several engines and
answers the same protocol, routing each container's operations to the engine it lives on. A Kubernetes
runtime would be a third implementation. Errors are the toolrunner's own: ``ContainerGone`` for a container
the engine does not have, ``SandboxBackendUnavailable`` (naming the engine) when it does not answer.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypedDict

from toolrunner.attach import AttachStream

MANAGED_LABEL = "openanalyst.managed"
TENANT_LABEL = "openanalyst.tenant"  # the tenant a container serves (set by the manager at create)
ENGINE_LABEL = "openanalyst.engine"  # the engine a container was placed on (no secrets: the address only)


class ContainerGone(LookupError):
    """The container no longer exists (removed behind our back)."""


class EngineReport(TypedDict):
    """One engine as ``GET /v1/sandbox`` and ``/health`` show it. ``url`` never carries a secret (TLS files
    and ssh identities are configured beside it, not in it)."""

    url: str
    state: Literal["up", "down"]
    containers: int  # this server's containers on it, running or stopped
    capacity: int | None  # at most this many (None: no bound of its own)
    error: str | None  # why it is down


class ContainerRuntime(Protocol):
    """Deadline-bounded container operations; every method may raise ``SandboxBackendUnavailable``."""

    async def ping(self) -> None:
        """Raise unless the engine(s) answer."""

    async def create(self, kwargs: dict[str, Any]) -> str:
        """Create (not start) a container from docker-py ``containers.create`` arguments; returns its id."""

    async def inspect(self, container_id: str) -> dict[str, Any]:
        """``docker inspect`` of one container (``ContainerGone`` if it is not there)."""

    async def image_id(self, image: str) -> str:
        """The image's content id (``sha256:…``), the same on every engine that has it."""

    async def open_attach(self, container_id: str) -> AttachStream:
        """The container's stdin/stdout/stderr as asyncio streams (attach before start: no output is missed)."""

    async def start(self, container_id: str) -> None: ...

    async def stop(self, container_id: str, *, grace_s: int = 2) -> None: ...

    async def wait_stopped(self, container_id: str, timeout_s: float) -> None:
        """Return once the container is not running, or after ``timeout_s`` (no error then)."""

    async def remove(self, container_id: str) -> None:
        """Force-remove, one removal at a time per engine; a missing container is fine."""

    async def list_managed(self, server_id: str) -> list[dict[str, Any]]:
        """Summaries (``Id``, ``Labels``, ``State``, ``Image``) of this server's containers, running or not."""

    async def usage(self, container_id: str) -> dict[str, Any]:
        """Memory, pids and CPU time now (``server.contract.sandbox.Usage``)."""

    async def engines(self, server_id: str) -> list[EngineReport]:
        """Each engine's state now, with ``server_id``'s containers on it (a down engine answers within the
        ping's deadline)."""

    def close(self) -> None:
        """Release clients, threads and tunnels."""
