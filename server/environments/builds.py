"""One background build per content hash, its progress kept (bounded) and readable by any number of waiters.

The build runs ``EnvironmentBuilder.ensure`` in a worker thread; its progress lines come back to the event
loop with ``call_soon_threadsafe``. A reader (the SSE route) takes the lines after the last one it saw, then
waits for the next change: no line is missed between a read and a wait, because both happen on the loop.
Two tenants asking for one hash share one ``Build``; a failed build is replaced by a new one on the next ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

from toolrunner.envbuild import Built, EnvironmentBuildFailed
from toolrunner.envbuild.errors import tail
from toolrunner.errors import SandboxError

log = logging.getLogger(__name__)
MAX_LINES = 2000
KEEP_FINISHED_LINES = 64  # finished builds whose progress lines are kept (the newest); older ones keep their state
BuildState = Literal["building", "ready", "failed"]


@dataclass
class Build:
    """A build's state, its last ``MAX_LINES`` progress lines (``first`` is the number of the oldest kept)."""

    hash: str
    state: BuildState = "building"
    lines: list[str] = field(default_factory=list)
    first: int = 0
    built: Built | None = None
    code: str | None = None
    message: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    owner: str | None = None  # the tenant whose definition started it (its per-tenant build count)

    def add(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) > MAX_LINES:
            drop = len(self.lines) - MAX_LINES
            del self.lines[:drop]
            self.first += drop
        self._wake()

    def finish(self, built: Built | None, error: SandboxError | None) -> None:
        self.built = built
        if error is None:
            self.state = "ready"
        else:
            self.state, self.code, self.message = "failed", error.code, tail(error.message)
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def follow(self, keepalive_s: float) -> AsyncIterator[tuple[int, str] | None]:
        """(number, line) for every kept line from the start, then live ones, until the build ends; ``None``
        after ``keepalive_s`` without a line (the caller sends a keep-alive)."""
        seen = self.first
        while True:
            seen = max(seen, self.first)
            for offset, line in enumerate(self.lines[seen - self.first:]):
                yield seen + offset, line
            seen = self.first + len(self.lines)
            if self.state != "building":
                return
            try:
                await asyncio.wait_for(self.changed.wait(), keepalive_s)
            except TimeoutError:
                yield None


class BuildLimit(Exception):
    """The tenant already has as many builds queued or running as it may."""


class Builds:
    """The builds of this server, by content hash."""

    def __init__(self, max_parallel: int = 2) -> None:
        self._builds: dict[str, Build] = {}
        self._finished: list[Build] = []  # oldest first; past KEEP_FINISHED_LINES their lines are dropped
        self._tasks: set[asyncio.Task[None]] = set()
        # Builds get daemon threads of their own, ``max_parallel`` at a time: minutes-long fetches must neither
        # take the default executor's threads (the sandbox manager's short steps) nor hold up the server's exit.
        self._slots = asyncio.Semaphore(max_parallel)

    def get(self, digest: str) -> Build | None:
        return self._builds.get(digest)

    def building(self, owner: str) -> int:
        """How many builds ``owner`` started are queued or running."""
        return sum(1 for b in self._builds.values() if b.owner == owner and b.state == "building")

    def start(self, digest: str, work: Callable[[Callable[[str], None]], Built], *,
              retry_failed: bool = False, owner: str | None = None, max_per_owner: int | None = None) -> Build:
        """The running or finished build of ``digest``; a new one when there is none (or, with
        ``retry_failed``, when the last one failed: a definition posted again is tried again). A new one is
        refused (``BuildLimit``) when ``owner`` has ``max_per_owner`` builds queued or running already: builds
        run a few at a time for the whole server, and one tenant's stream of new definitions must not queue
        ahead of every other tenant's without bound."""
        build = self._builds.get(digest)
        if build is not None and not (retry_failed and build.state == "failed"):
            return build
        if owner is not None and max_per_owner is not None and self.building(owner) >= max_per_owner:
            raise BuildLimit(f"{max_per_owner} environment builds of this tenant are queued or running; retry "
                             "when one has ended")
        build = self._builds[digest] = Build(digest, owner=owner)
        loop = asyncio.get_running_loop()

        def progress(line: str) -> None:
            loop.call_soon_threadsafe(build.add, line)

        async def run() -> None:
            try:
                async with self._slots:
                    built = await _in_daemon_thread(work, progress, digest)
            except SandboxError as exc:
                await asyncio.sleep(0)  # the thread's last progress lines are queued before this
                build.finish(None, exc)
                return
            except Exception as exc:  # anything the engine or a tool threw: the build failed, the server stays
                log.exception("environment build %s failed", digest[:16])
                build.finish(None, EnvironmentBuildFailed(f"the build failed: {exc}"))
                return
            await asyncio.sleep(0)
            build.finish(built, None)

        def finished(_task: asyncio.Task[None]) -> None:
            self._tasks.discard(_task)
            self._finished.append(build)
            while len(self._finished) > KEEP_FINISHED_LINES:
                old = self._finished.pop(0)
                old.first += len(old.lines)
                old.lines = []

        task = asyncio.create_task(run(), name=f"environment-build-{digest[:16]}")
        self._tasks.add(task)
        task.add_done_callback(finished)
        return build

    async def close(self) -> None:
        """Stop waiting for builds (a build thread finishes on its own; its image is kept or removed by it)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _in_daemon_thread(work: Callable[[Callable[[str], None]], Built], progress: Callable[[str], None],
                            digest: str) -> Built:
    """``work(progress)`` in a daemon thread; its outcome comes back through a future of this loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Built] = loop.create_future()

    def settle(outcome: Built | BaseException) -> None:
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def target() -> None:
        try:
            outcome: Built | BaseException = work(progress)
        except BaseException as exc:  # handed to the loop, which decides
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=target, name=f"environment-build-{digest[:16]}", daemon=True).start()
    return await future
