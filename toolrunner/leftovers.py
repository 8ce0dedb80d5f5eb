"""Containers the manager meant to remove while the engine could not do it (down, restarting, hung).

Forgetting them would leave dead containers behind for good once the engine is back (a restart keeps them,
Exited), so each is remembered here and removed, one at a time like every removal (the engine's concurrent
removal bug: /work/shared/DOCKER_NOTES.md), by the next sweep after the engine answers again.
"""

from __future__ import annotations

import asyncio
import logging

from toolrunner.errors import SandboxError
from toolrunner.runtime import ContainerGone, ContainerRuntime

log = logging.getLogger(__name__)


class Leftovers:
    """An ordered set of container ids still to remove, and the removals that fill and empty it."""

    def __init__(self, backend: ContainerRuntime) -> None:
        self._backend = backend
        self._ids: dict[str, None] = {}
        self._sweeping = asyncio.Lock()

    def __bool__(self) -> bool:
        return bool(self._ids)

    def __contains__(self, container_id: object) -> bool:
        return container_id in self._ids

    def add(self, container_id: str) -> None:
        self._ids[container_id] = None

    async def remove(self, container_id: str) -> None:
        """Remove a container now, or remember it if the engine cannot (never raises an engine error)."""
        try:
            await self._backend.remove(container_id)
        except ContainerGone:
            pass
        except SandboxError as exc:
            log.error("could not remove container %s (will retry): %s", container_id[:12], exc)
            self._ids[container_id] = None
            return
        self._ids.pop(container_id, None)

    async def sweep(self) -> None:
        """Remove what is remembered, one at a time; stop at the first engine error (the next sweep retries)."""
        if self._sweeping.locked():
            return
        async with self._sweeping:
            for container_id in list(self._ids):
                try:
                    await self._backend.remove(container_id)
                except ContainerGone:
                    pass
                except SandboxError:
                    return
                self._ids.pop(container_id, None)
                log.info("removed leftover container %s", container_id[:12])
