"""The only module that talks to docker-py about containers; every call has a deadline.

docker-py is synchronous and untyped, so each operation runs in a worker thread under ``asyncio.wait_for``
and the client itself carries an HTTP timeout: a hung engine becomes ``SandboxBackendUnavailable`` instead of
a hung request. Removals go through a single-thread executor because dockerd 20.10.24 can deadlock when
containers are removed from several threads at once (docs: /work/shared/DOCKER_NOTES.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

import docker
import docker.errors
import requests.exceptions

from toolrunner.attach import AttachStream
from toolrunner.engine_attach import open_engine_attach
from toolrunner.engines import EngineAddress, EngineAddressError, engine_from_environment
from toolrunner.errors import SandboxBackendUnavailable, SandboxImageUnavailable, SandboxStartFailed
from toolrunner.runtime import MANAGED_LABEL, ContainerGone, EngineReport
from toolrunner.ssh_tunnel import SshTunnel, TunnelFailed

log = logging.getLogger(__name__)
T = TypeVar("T")
__all__ = ["MANAGED_LABEL", "ContainerGone", "DockerBackend"]

def _never_sent(exc: BaseException, depth: int = 0) -> bool:
    """Whether the error chain says the connection itself failed (refused, or no socket file), so that the
    request cannot have reached the engine and asking again is safe even for a create."""
    if isinstance(exc, ConnectionRefusedError | FileNotFoundError):
        return True
    if depth > 6:
        return False
    inner = [a for a in exc.args if isinstance(a, BaseException)] + [e for e in (exc.__cause__, exc.__context__) if e]
    return any(_never_sent(e, depth + 1) for e in inner)


class DockerBackend:
    """One engine as a ``ContainerRuntime``: async, deadline-bounded operations over one docker-py client."""

    def __init__(self, client: Any | None = None, *, timeout_s: float = 30.0,
                 engine: EngineAddress | None = None) -> None:
        self.timeout_s = timeout_s
        self._own_client = client is None
        self._tunnel: SshTunnel | None = None
        try:
            self.engine = engine or engine_from_environment()
            if self.engine.scheme == "ssh":  # both halves then go through one forwarded unix socket
                self._tunnel = SshTunnel(self.engine.ssh_argv())
            self._dial = self._dial_address()
            self._client: Any = client if client is not None else self._dial.docker_client(
                timeout_s=max(5, int(timeout_s)), max_pool_size=64)
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            self._close_tunnel()  # the version request (negotiation) failed, was refused or timed out
            raise SandboxBackendUnavailable(f"the container engine is not reachable: {exc}") from exc
        except (EngineAddressError, TunnelFailed) as exc:
            self._close_tunnel()
            raise SandboxBackendUnavailable(f"the container engine {self.engine.url} is unusable: {exc}") from exc
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="docker")
        self._remover = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="docker-rm")

    async def _run(self, what: str, fn: Callable[[], T], *, timeout_s: float | None = None,
                   pool: concurrent.futures.Executor | None = None) -> T:
        loop = asyncio.get_running_loop()
        deadline = timeout_s or self.timeout_s
        try:
            try:
                return await asyncio.wait_for(loop.run_in_executor(pool or self._pool, fn), deadline)
            except (requests.exceptions.ConnectionError, OSError) as exc:
                if self._tunnel is None or not _never_sent(exc):
                    raise
                # The SSH tunnel died, so the request never left this machine: open it again, ask once more.
                await asyncio.wait_for(loop.run_in_executor(self._pool, self._tunnel.socket), deadline)
                return await asyncio.wait_for(loop.run_in_executor(pool or self._pool, fn), deadline)
        except TimeoutError as exc:
            raise SandboxBackendUnavailable(f"the container engine did not answer {what} within "
                                            f"{deadline:.0f} s") from exc
        except docker.errors.ImageNotFound as exc:
            raise SandboxImageUnavailable(f"sandbox image missing: {exc.explanation}") from exc
        except docker.errors.NotFound as exc:
            raise ContainerGone(str(exc.explanation)) from exc
        except docker.errors.APIError as exc:
            if exc.status_code is not None and exc.status_code < 500:  # the engine refused what we asked
                raise SandboxStartFailed(f"the container engine refused {what}: {exc.explanation}") from exc
            raise SandboxBackendUnavailable(f"the container engine failed {what}: {exc}") from exc
        except (requests.exceptions.ConnectionError, docker.errors.DockerException, OSError) as exc:
            raise SandboxBackendUnavailable(f"the container engine failed {what}: {exc}") from exc

    async def ping(self) -> None:
        """Raise ``SandboxBackendUnavailable`` unless the engine answers."""
        if self._tunnel is not None:  # a tunnel that died is opened again (or the ping fails with ssh's words)
            await self._run("ssh tunnel", self._tunnel.socket, timeout_s=self.timeout_s)
        await self._run("ping", self._client.ping, timeout_s=min(self.timeout_s, 10))

    async def engines(self, server_id: str) -> list[EngineReport]:
        """This one engine's state: up (with this server's container count) or down (with why)."""
        try:
            await self.ping()
            count = len(await self.list_managed(server_id))
        except SandboxBackendUnavailable as exc:
            return [EngineReport(url=self.engine.url, state="down", containers=0, capacity=None, error=exc.message)]
        return [EngineReport(url=self.engine.url, state="up", containers=count, capacity=None, error=None)]

    async def create(self, kwargs: dict[str, Any]) -> str:
        """Create (not start) a container; returns its id."""
        container = await self._run("create", lambda: self._client.containers.create(**kwargs))
        return str(container.id)

    async def inspect(self, container_id: str) -> dict[str, Any]:
        """``docker inspect`` of one container."""
        attrs = await self._run("inspect", lambda: self._client.api.inspect_container(container_id))
        return cast(dict[str, Any], attrs)

    async def image_id(self, image: str) -> str:
        """The image's content id (sha256:…) for the audit record."""
        attrs = await self._run("image inspect", lambda: self._client.api.inspect_image(image))
        return str(attrs["Id"])

    def dial_address(self) -> EngineAddress:
        """Where a client of this engine connects now (an SSH engine's tunnel is opened again if it died)."""
        return self._dial_address()

    def _dial_address(self) -> EngineAddress:
        """Where to connect: the engine itself, or for SSH the local end of its (re)opened tunnel."""
        if self._tunnel is None:
            return self.engine
        return EngineAddress(url=self.engine.url, scheme="unix", path=str(self._tunnel.socket()))

    def _close_tunnel(self) -> None:
        if self._tunnel is not None:
            self._tunnel.close()

    async def open_attach(self, container_id: str) -> AttachStream:
        """The runner's stdin/stdout/stderr as asyncio streams, over whatever connection reaches the engine
        (unix socket, TCP with TLS, SSH): see ``toolrunner.engine_attach``. An SSH tunnel that died since is
        opened again first (attaching happens once per container start, so the check is cheap)."""
        try:
            dial = await asyncio.to_thread(self._dial_address) if self._tunnel is not None else self._dial
            return await open_engine_attach(dial, container_id, api_version=str(self._client.api.api_version),
                                            timeout_s=self.timeout_s)
        except (TimeoutError, OSError) as exc:
            raise SandboxBackendUnavailable(f"the container engine did not attach {container_id[:12]}: {exc}") from exc

    async def start(self, container_id: str) -> None:
        await self._run("start", lambda: self._client.api.start(container_id))

    async def stop(self, container_id: str, *, grace_s: int = 2) -> None:
        await self._run("stop", lambda: self._client.api.stop(container_id, timeout=grace_s),
                        timeout_s=self.timeout_s + grace_s)

    async def kill(self, container_id: str) -> None:
        await self._run("kill", lambda: self._client.api.kill(container_id))

    async def wait_stopped(self, container_id: str, timeout_s: float) -> None:
        """Wait until the container is no longer running (or the timeout passes; no error then)."""
        with contextlib.suppress(SandboxBackendUnavailable):
            await self._run("wait", lambda: self._client.api.wait(container_id, timeout=timeout_s),
                            timeout_s=timeout_s + 1)

    async def remove(self, container_id: str) -> None:
        """Force-remove a container, one removal at a time process-wide; a missing one is fine."""
        def remove() -> None:
            try:
                self._client.api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: removal already in progress
                    raise

        await self._run("remove", remove, pool=self._remover)

    async def list_managed(self, server_id: str) -> list[dict[str, Any]]:
        """Summaries (Id, Labels, State, Image) of this server's containers, running or not."""
        filters = {"label": [f"{MANAGED_LABEL}=1", f"openanalyst.server={server_id}"]}
        rows = await self._run("list", lambda: self._client.api.containers(all=True, filters=filters))
        return cast(list[dict[str, Any]], rows)

    async def stats(self, container_id: str) -> dict[str, Any]:
        """One ``docker stats`` sample (no streaming)."""
        data = await self._run("stats", lambda: self._client.api.stats(container_id, stream=False,
                                                                        one_shot=True))
        return cast(dict[str, Any], data)

    async def usage(self, container_id: str) -> dict[str, Any]:
        """Memory, pids and CPU time now, from one ``docker stats`` sample."""
        stats = await self.stats(container_id)
        memory = stats.get("memory_stats") or {}
        cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
        detail = memory.get("stats") or {}
        # Like `docker stats`: page cache that can be dropped (inactive files) is not the tenant's memory.
        inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0
        used = memory.get("usage")
        return {"memory_bytes": None if used is None else max(0, int(used) - int(inactive)),
                "memory_rss_bytes": detail.get("total_rss", detail.get("anon")),
                "memory_cache_bytes": detail.get("total_cache", detail.get("file")),
                "memory_limit_bytes": memory.get("limit"),
                "pids": (stats.get("pids_stats") or {}).get("current"),
                "cpu_total_s": (cpu.get("total_usage") or 0) / 1e9}

    async def exec_run(self, container_id: str, cmd: list[str]) -> int:
        """``docker exec`` (benchmarks only: the manager never execs per call)."""
        result = await self._run("exec", lambda: self._client.containers.get(container_id).exec_run(cmd))
        return int(result.exit_code)

    def close(self) -> None:
        """Stop the worker threads (and the client, if this backend made it)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._remover.shutdown(wait=False, cancel_futures=True)
        if self._own_client:
            self._client.close()
        self._close_tunnel()
