"""The server's view of the sandbox: a `SandboxManager` that comes up in the background.

At start the server must keep serving even when Docker is slow, the image is missing or cannot be built, so
the image check (and build, if needed) and the re-adoption of our containers run in a background task; tool
calls wait for it, and if it failed they get `SANDBOX_IMAGE_UNAVAILABLE` / `SANDBOX_BACKEND_UNAVAILABLE`
with the reason while every other endpoint keeps working. A failed bring-up is tried again by the first call
at least ``RETRY_BRING_UP_S`` after it (an engine that was down at start is used once it is back, without a
server restart; calls in between fail fast). Toolrunner errors become API errors here, once.

While the image is being built, ``info`` answers at once with the build's progress (``ImageStatus``)
instead of waiting for it. A running manager whose image the engine lost answers SANDBOX_IMAGE_UNAVAILABLE;
the image is then checked again (at most every ``RETRY_BRING_UP_S``) so that one built meanwhile with
``openanalyst sandbox build`` is noticed without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from policies.model import Policy
from server.errors import ApiError, ServiceUnavailable, TooManyRequests
from server.tools.dispatch import ChunkCallback
from server.tools.image_caps import CapsStore
from server.tools.image_status import ImageStatus
from toolrunner.config import SandboxConfig
from toolrunner.egress.hub import EgressPlumbing
from toolrunner.errors import SandboxCapacity, SandboxError, TooManyCalls
from toolrunner.manager import CallOutcome, SandboxManager
from toolrunner.runtime import EngineReport

log = logging.getLogger(__name__)

ImageProvider = Callable[[], str]
RETRY_BRING_UP_S = 5.0
ENGINES_CACHE_S, ENGINES_TIMEOUT_S = 2.0, 5.0


def api_error(exc: SandboxError) -> ApiError:
    if isinstance(exc, TooManyCalls):
        return TooManyRequests(exc.code, exc.message, retry_after_s=exc.retry_after_s)
    if isinstance(exc, SandboxCapacity):  # the host is full: come back when a container may be idle
        return ServiceUnavailable(exc.code, exc.message,
                                  headers={"Retry-After": str(max(1, round(exc.retry_after_s)))})
    return ApiError(exc.code, exc.message, status=exc.status)


class SandboxBackend:
    """Owns the manager's life: started lazily in the background, closed with the server."""

    def __init__(self, config_for_image: Callable[[str], SandboxConfig], ensure_image: ImageProvider,
                 policy_for: Callable[[str], Policy], *, image_status: ImageStatus | None = None,
                 egress: EgressPlumbing | None = None, caps_store: CapsStore | None = None) -> None:
        self.image_status = image_status or ImageStatus()
        self._caps_store = caps_store
        # (tenant, session) -> the environment image a call runs in, None for the sandbox image; refusals are
        # ApiErrors (ENVIRONMENT_BUILDING...). Set by server.wiring (docs/environments.md).
        self.image_for: Callable[[str, str], Awaitable[str | None]] | None = None
        self._egress = egress
        self._recheck: asyncio.Task[None] | None = None
        self._rechecked_at = 0.0
        self._config_for_image = config_for_image
        self._ensure_image = ensure_image
        self._policy_for = policy_for
        self._manager: SandboxManager | None = None
        self._failure: ApiError | None = None
        self._ready: asyncio.Task[None] | None = None
        self._failed_at = 0.0
        self._engines: list[EngineReport] | None = None
        self._engines_at = -1e9

    def start(self) -> None:
        """Begin the image check and adoption in the background (idempotent; again after a failed try)."""
        retry = (self._ready is not None and self._ready.done() and self._manager is None
                 and time.monotonic() - self._failed_at >= RETRY_BRING_UP_S)
        if self._ready is None or retry:
            self.image_status.checking()  # before the task runs: an info() right after must not show the old failure
            self._ready = asyncio.create_task(self._bring_up(), name="sandbox-bring-up")

    async def _bring_up(self) -> None:
        try:
            tag = await asyncio.to_thread(self._ensure_image)
        except SandboxError as exc:
            self._fail(api_error(exc))
            log.error("sandbox unavailable (%s), tool calls will fail until it is back: %s", exc.code, exc.message)
            return
        except Exception as exc:  # anything the engine throws: the API must stay up
            self._fail(ApiError("SANDBOX_IMAGE_UNAVAILABLE", f"could not get the sandbox image: {exc}",
                                status=503))
            log.error("sandbox image unavailable, tool calls will fail: %s", exc)
            return
        manager: SandboxManager | None = None
        try:
            manager = SandboxManager(self._config_for_image(tag), self._policy_for, egress=self._egress)
            await manager.adopt_or_reap()
        except SandboxError as exc:
            if manager is not None:
                await manager.shutdown()
            self._fail(api_error(exc))
            log.error("sandbox backend unavailable: %s", exc.message)
            return
        self._manager = manager
        self.image_status.ready(tag)
        log.info("sandbox ready: image %s", tag)

    def _fail(self, error: ApiError) -> None:
        self._failure = error
        self._failed_at = time.monotonic()
        self.image_status.failed(error.message)

    def caps(self) -> dict[str, bool] | None:
        """What the current image's runner says it can run (its hello's ``caps``), or None while unknown: the
        running manager's last fresh hello, else what an earlier start saved for the same image tag."""
        manager = self._manager
        if manager is None:
            return None
        tag = manager.config.image
        if manager.runner_caps is not None:
            if self._caps_store is not None:
                self._caps_store.put(tag, manager.runner_caps)
            return manager.runner_caps
        return self._caps_store.get(tag) if self._caps_store is not None else None

    def ready_manager(self) -> SandboxManager | None:
        """The manager if the sandbox is up (for metrics; never waits)."""
        return self._manager

    def _image_lost(self, exc: SandboxError) -> None:
        """The engine lost the image under a running manager: check it again, at most every RETRY_BRING_UP_S."""
        self.image_status.missing(exc.message)
        busy = self._recheck is not None and not self._recheck.done()
        if busy or time.monotonic() - self._rechecked_at < RETRY_BRING_UP_S:
            return
        self._rechecked_at = time.monotonic()
        self._recheck = asyncio.create_task(self._check_image_again(), name="sandbox-image-recheck")

    async def _check_image_again(self) -> None:
        self.image_status.checking()
        try:
            tag = await asyncio.to_thread(self._ensure_image)
        except Exception as exc:
            self.image_status.failed(str(exc))
            log.error("sandbox image still unavailable: %s", exc)
            return
        self.image_status.ready(tag)
        log.info("sandbox image %s is back", tag)

    async def manager(self) -> SandboxManager:
        self.start()
        assert self._ready is not None
        await asyncio.shield(self._ready)
        if self._manager is None:
            raise self._failure or ApiError("SANDBOX_BACKEND_UNAVAILABLE", "the sandbox did not start",
                                            status=503)
        return self._manager

    async def run(self, tenant_id: str, session_id: str, tool: str, args: dict[str, Any], *,
                  timeout_s: float | None, on_chunk: ChunkCallback | None,
                  call_id: str | None = None) -> CallOutcome:
        manager = await self.manager()
        image = await self.image_for(tenant_id, session_id) if self.image_for is not None else None
        try:
            return await manager.call(tenant_id, session_id, tool, args, timeout_s=timeout_s, on_chunk=on_chunk,
                                      image=image, call_id=call_id)
        except SandboxError as exc:
            if exc.code == "SANDBOX_IMAGE_UNAVAILABLE":
                self._image_lost(exc)
            raise api_error(exc) from None

    async def prestart(self, tenant_id: str) -> None:
        """Hide the container start behind the client's next steps; never fails the caller."""
        if self._manager is not None:
            await self._manager.prestart(tenant_id)

    async def close_session(self, tenant_id: str, session_id: str) -> None:
        if self._manager is not None:
            await self._manager.close_session(tenant_id, session_id)

    async def engines(self) -> list[EngineReport] | None:
        """Each engine's state (``GET /health``, ``GET /v1/sandbox``), None while the sandbox is not up; asked
        at most every ``ENGINES_CACHE_S`` and never for longer than ``ENGINES_TIMEOUT_S`` (health probes poll)."""
        manager = self._manager
        if manager is None:
            return None
        if time.monotonic() - self._engines_at >= ENGINES_CACHE_S:
            try:
                self._engines = await asyncio.wait_for(manager.backend.engines(manager.config.instance_id),
                                                       ENGINES_TIMEOUT_S)
            except (SandboxError, TimeoutError) as exc:
                log.warning("could not ask the container engines for their state: %s", exc)
                return self._engines
            self._engines_at = time.monotonic()
        return self._engines

    async def info(self, tenant_id: str) -> dict[str, Any]:
        """The manager's view of the tenant's sandbox plus ``image_build``. The image check and adoption are
        waited for as before (seconds); once a build runs (minutes): ``state: waiting_for_image`` and the
        build's progress, at once."""
        self.start()
        while self._ready is not None and not self._ready.done() and self.image_status.state != "building":
            await asyncio.wait({self._ready}, timeout=0.05)  # the build's first line comes from a thread
        if self._manager is None and self._ready is not None and not self._ready.done():
            return {"tenant": tenant_id, "state": "waiting_for_image", "container_id": None,
                    "image_build": self.image_status.snapshot()}
        manager = await self.manager()
        try:
            return {**await manager.info(tenant_id), "image_build": self.image_status.snapshot(),
                    "engines": await self.engines()}
        except SandboxError as exc:
            raise api_error(exc) from None

    async def remove(self, tenant_id: str) -> None:
        manager = await self.manager()
        try:
            await manager.remove(tenant_id)
        except SandboxError as exc:
            raise api_error(exc) from None

    async def close(self) -> None:
        for task in (self._ready, self._recheck):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._manager is not None:
            await self._manager.shutdown()
