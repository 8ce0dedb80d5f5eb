"""``EngineSet``: tenants' containers spread over several engines, behind the one ``ContainerRuntime`` protocol.

Placement (``create``): a tenant sticks to the engine of a container of its that this server still holds
(running, stopped, or waiting to be removed), so its restarts and replacements land where it was; a new
tenant goes to the engine that answers its ping and has the most free capacity (``capacity`` minus this
server's containers there; an engine without a bound counts as the freest, fewest containers first). An
engine that lacks the image gets a copy from one that has it (image_copy.py); if that fails too, it is
skipped for the next. Every other operation goes to the engine that holds the
container. The engine is recorded in the container's ``openanalyst.engine`` label, and ``list_managed``
(which adoption calls at start) learns every container's engine, so a restarted server finds each tenant's.

An engine that does not answer is reported ``down`` and skipped for new tenants; operations on its
containers fail with ``SandboxBackendUnavailable`` naming it, so only its tenants are affected. An engine
that was down when containers were listed is swept once it answers again: this server's containers there
that nothing here knows about are removed (the tenants were placed afresh meanwhile, or will be).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from toolrunner.attach import AttachStream
from toolrunner.docker_backend import DockerBackend
from toolrunner.engine_list import EngineEntry, engines_from_environment
from toolrunner.engines import EngineAddressError
from toolrunner.errors import SandboxBackendUnavailable, SandboxCapacity, SandboxImageUnavailable
from toolrunner.image_copy import copy_image
from toolrunner.runtime import ENGINE_LABEL, TENANT_LABEL, ContainerGone, ContainerRuntime, EngineReport

log = logging.getLogger(__name__)
T = TypeVar("T")
PING_TIMEOUT_S = 3.0
FRESH_S = 2.0  # a ping younger than this is trusted for placement and reports


@dataclass(eq=False)
class _Engine:
    entry: EngineEntry
    runtime: DockerBackend | None = None  # made on first contact (its constructor talks to the engine)
    error: str | None = "not contacted yet"
    checked_at: float = -1e9
    owes_sweep: bool = False  # it was down when containers were listed: sweep it once it answers
    creating: int = 0  # creates in flight: counted, so two new tenants at once cannot both take its last slot
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one check at a time (one client made)

    @property
    def url(self) -> str:
        return self.entry.address.url

    @property
    def up(self) -> bool:
        return self.error is None


@dataclass
class _Placed:
    engine: _Engine
    tenant: str


@dataclass(eq=False)
class EngineSet:
    """Several ``DockerBackend``s as one ``ContainerRuntime``, with sticky, capacity-aware placement."""

    entries: list[EngineEntry]
    timeout_s: float = 30.0
    make: Callable[[EngineEntry, float], DockerBackend] = field(
        default=lambda entry, timeout_s: DockerBackend(timeout_s=timeout_s, engine=entry.address))
    _engines: list[_Engine] = field(init=False)
    _containers: dict[str, _Placed] = field(init=False, default_factory=dict)
    _server_id: str | None = field(init=False, default=None)
    _creating: dict[str, int] = field(init=False, default_factory=dict)  # tenant -> creates in flight
    _copying: dict[tuple[str, str], asyncio.Lock] = field(init=False, default_factory=dict)  # (engine, image)

    def __post_init__(self) -> None:
        self._engines = [_Engine(entry) for entry in self.entries]

    # ---- engine health --------------------------------------------------------------------------

    async def _check(self, engine: _Engine) -> None:
        async with engine.lock:
            await self._check_locked(engine)

    async def _check_locked(self, engine: _Engine) -> None:
        """Ping (connecting first if needed: the client's own timeout bounds that), within PING_TIMEOUT_S;
        remember the answer. An engine that answers again is swept."""
        was_up = engine.up
        try:
            if engine.runtime is None:
                engine.runtime = await asyncio.to_thread(self.make, engine.entry, self.timeout_s)
            async with asyncio.timeout(PING_TIMEOUT_S):
                await engine.runtime.ping()
            engine.error = None
        except SandboxBackendUnavailable as exc:
            engine.error = exc.message
        except TimeoutError:
            engine.error = f"no answer to a ping within {PING_TIMEOUT_S:g} s"
        engine.checked_at = time.monotonic()
        if engine.up and not was_up:
            log.info("engine %s answers", engine.url)
        if engine.up and engine.owes_sweep and self._server_id is not None:
            await self._sweep_returned(engine, self._server_id)
        if was_up and not engine.up:
            log.warning("engine %s is down: %s", engine.url, engine.error)

    def _none_answers(self) -> SandboxBackendUnavailable:
        return SandboxBackendUnavailable("no container engine answers: " + "; ".join(
            f"{e.url}: {e.error}" for e in self._engines))

    async def _refresh(self, max_age_s: float = FRESH_S) -> None:
        stale = [e for e in self._engines if time.monotonic() - e.checked_at >= max_age_s]
        await asyncio.gather(*(self._check(e) for e in stale))

    def _down(self, engine: _Engine, exc: SandboxBackendUnavailable) -> SandboxBackendUnavailable:
        engine.error, engine.checked_at = exc.message, time.monotonic()
        return SandboxBackendUnavailable(f"engine {engine.url}: {exc.message}")

    async def _on(self, engine: _Engine, fn: Callable[[DockerBackend], Awaitable[T]]) -> T:
        """One operation on one engine; its unavailability is told with the engine's name."""
        if engine.runtime is None:
            await self._check(engine)
            if engine.runtime is None:
                raise SandboxBackendUnavailable(f"engine {engine.url} is down: {engine.error}")
        try:
            result = await fn(engine.runtime)
        except SandboxBackendUnavailable as exc:
            raise self._down(engine, exc) from exc
        if not engine.up:  # it answered: up again (a sweep it may owe follows at the next check)
            engine.error, engine.checked_at = None, -1e9
        return result

    # ---- placement ------------------------------------------------------------------------------

    def _count(self, engine: _Engine) -> int:
        return engine.creating + sum(1 for p in self._containers.values() if p.engine is engine)

    async def _candidates(self, tenant: str) -> list[_Engine]:
        sticky = next((p.engine for p in self._containers.values() if p.tenant == tenant), None)
        if sticky is not None:
            return [sticky]
        await self._refresh()
        up = [e for e in self._engines if e.up]
        if not up:
            raise self._none_answers()

        def free(e: _Engine) -> float:
            return float("inf") if e.entry.capacity is None else e.entry.capacity - self._count(e)

        room = sorted((e for e in up if free(e) > 0), key=lambda e: (-free(e), self._count(e)))
        if not room:
            raise SandboxCapacity("every container engine that answers is at its capacity: " + ", ".join(
                f"{e.url} ({self._count(e)}/{e.entry.capacity})" for e in up), retry_after_s=5.0)
        return room

    async def create(self, kwargs: dict[str, Any]) -> str:
        tenant = _tenant_of(kwargs.get("labels"))
        missing: SandboxImageUnavailable | None = None
        self._creating[tenant] = self._creating.get(tenant, 0) + 1  # a sweep meanwhile must spare it
        try:
            for engine in await self._candidates(tenant):
                engine.creating += 1  # taken with the choice (no await between): the slot is this tenant's
                try:
                    try:
                        container_id = await self._create_on(engine, kwargs)
                    except SandboxImageUnavailable:  # this engine lacks the image: copy it there, once
                        await self._copy_image(str(kwargs.get("image")), engine)
                        container_id = await self._create_on(engine, kwargs)
                except SandboxImageUnavailable as exc:  # not even a copy helped: the next engine may have it
                    log.warning("engine %s: %s", engine.url, exc.message)
                    missing = SandboxImageUnavailable(f"engine {engine.url}: {exc.message}")
                    continue
                finally:
                    engine.creating -= 1
                self._containers[container_id] = _Placed(engine, tenant)
                return container_id
        finally:
            self._creating[tenant] -= 1
            if not self._creating[tenant]:
                del self._creating[tenant]
        assert missing is not None
        raise missing

    async def _copy_image(self, image: str, target: _Engine) -> None:
        """Copy `image` to `target` from an engine that answers and has it (image_copy.py). One copy per
        engine and image at a time: a second tenant placed there meanwhile waits for it, then finds it."""
        lock = self._copying.setdefault((target.url, image), asyncio.Lock())
        async with lock:
            if target.runtime is not None and await self._has_image(target, image):
                return  # copied by the tenant that held the lock before us
            for source in self._engines:
                if source is target or not source.up or source.runtime is None:
                    continue
                if not await self._has_image(source, image):
                    continue
                assert target.runtime is not None
                log.info("engine %s lacks %s: copying it from %s", target.url, image, source.url)
                await asyncio.to_thread(copy_image, image, source.runtime.dial_address(),
                                        target.runtime.dial_address())
                return
            raise SandboxImageUnavailable(f"no engine that answers has {image} to copy from")

    async def _has_image(self, engine: _Engine, image: str) -> bool:
        try:
            await self._on(engine, lambda r: r.image_id(image))
        except (SandboxImageUnavailable, SandboxBackendUnavailable):
            return False
        return True

    async def _create_on(self, engine: _Engine, kwargs: dict[str, Any]) -> str:
        placed = {**kwargs, "labels": {**(kwargs.get("labels") or {}), ENGINE_LABEL: engine.url}}
        return await self._on(engine, lambda r: r.create(placed))

    # ---- operations routed to the container's engine ----------------------------------------------

    def _holder(self, container_id: str) -> _Engine:
        placed = self._containers.get(container_id)
        if placed is None:
            raise ContainerGone(f"no engine of this server holds container {container_id[:12]}")
        return placed.engine

    async def inspect(self, container_id: str) -> dict[str, Any]:
        return await self._on(self._holder(container_id), lambda r: r.inspect(container_id))

    async def open_attach(self, container_id: str) -> AttachStream:
        return await self._on(self._holder(container_id), lambda r: r.open_attach(container_id))

    async def start(self, container_id: str) -> None:
        await self._on(self._holder(container_id), lambda r: r.start(container_id))

    async def stop(self, container_id: str, *, grace_s: int = 2) -> None:
        await self._on(self._holder(container_id), lambda r: r.stop(container_id, grace_s=grace_s))

    async def wait_stopped(self, container_id: str, timeout_s: float) -> None:
        await self._on(self._holder(container_id), lambda r: r.wait_stopped(container_id, timeout_s))

    async def usage(self, container_id: str) -> dict[str, Any]:
        return await self._on(self._holder(container_id), lambda r: r.usage(container_id))

    async def remove(self, container_id: str) -> None:
        """Removed (or already gone): forgotten, so its tenant is free to be placed anew. An engine that is
        down keeps it recorded (the manager retries), and its tenant stays there."""
        placed = self._containers.get(container_id)
        if placed is None:
            return
        with contextlib.suppress(ContainerGone):
            await self._on(placed.engine, lambda r: r.remove(container_id))
        self._containers.pop(container_id, None)

    async def image_id(self, image: str) -> str:
        """From the first engine that answers and has it (an image's id is its content: equal everywhere)."""
        await self._refresh()
        failure: Exception | None = None
        for engine in sorted(self._engines, key=lambda e: not e.up):
            try:
                return await self._on(engine, lambda r: r.image_id(image))
            except (SandboxBackendUnavailable, SandboxImageUnavailable) as exc:
                failure = exc
        assert failure is not None
        raise failure

    # ---- listing, reporting ---------------------------------------------------------------------

    def _learn(self, engine: _Engine, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            tenant = _tenant_of(row.get("Labels"))
            self._containers[str(row["Id"])] = _Placed(engine, tenant)

    async def list_managed(self, server_id: str) -> list[dict[str, Any]]:
        """Every answering engine's containers of ``server_id`` (each remembered with its engine). An engine
        that does not answer is left out, and swept when it answers again; with none answering, this fails."""
        self._server_id = server_id
        await self._refresh(0)
        rows: list[dict[str, Any]] = []
        for engine in self._engines:
            try:
                if not engine.up:
                    raise SandboxBackendUnavailable(f"engine {engine.url} is down: {engine.error}")
                found = await self._on(engine, lambda r: r.list_managed(server_id))
            except SandboxBackendUnavailable as exc:
                log.warning("%s; its containers are swept when it answers again", exc.message)
                engine.owes_sweep = True
                continue
            self._learn(engine, found)
            rows += found
        if not any(e.up for e in self._engines):
            raise self._none_answers()
        return rows

    async def _sweep_returned(self, engine: _Engine, server_id: str) -> None:
        """An engine that was not listed answers now: its containers of ours that nothing here knows are
        leftovers of an earlier run (their tenants were placed afresh): removed one at a time."""
        assert engine.runtime is not None
        try:
            rows = await engine.runtime.list_managed(server_id)
            for row in rows:
                tenant = _tenant_of(row.get("Labels"))
                if str(row["Id"]) not in self._containers and tenant not in self._creating:
                    log.info("engine %s is back: removing its unknown container %s", engine.url, row["Id"][:12])
                    await engine.runtime.remove(str(row["Id"]))
        except SandboxBackendUnavailable as exc:
            log.warning("engine %s answered, but sweeping it failed: %s", engine.url, exc.message)
            engine.error = exc.message
            return
        engine.owes_sweep = False

    async def ping(self) -> None:
        """Raise unless at least one engine answers."""
        await self._refresh(0)
        if not any(e.up for e in self._engines):
            raise self._none_answers()

    async def engines(self, server_id: str) -> list[EngineReport]:
        await self._refresh()
        return [EngineReport(url=e.url, state="up" if e.up else "down", containers=self._count(e),
                             capacity=e.entry.capacity, error=e.error) for e in self._engines]

    def close(self) -> None:
        for engine in self._engines:
            if engine.runtime is not None:
                engine.runtime.close()


def _tenant_of(labels: dict[str, str] | None) -> str:
    return str((labels or {}).get(TENANT_LABEL, ""))


def runtime_for(docker_hosts: str | None, timeout_s: float) -> ContainerRuntime:
    """One ``DockerBackend`` for the Docker CLI's engine, or an ``EngineSet`` for a configured list."""
    if docker_hosts is None or not docker_hosts.strip():
        return DockerBackend(timeout_s=timeout_s)
    try:
        return EngineSet(engines_from_environment(docker_hosts, os.environ), timeout_s)
    except EngineAddressError as exc:  # settings checked it at start; this is for direct callers
        raise SandboxBackendUnavailable(str(exc)) from exc
