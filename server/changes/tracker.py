"""``ChangeTracker``: the change report of every sandbox call, through one hook in the dispatcher.

``around(ctx, where, run)`` opens the call's window on the tenant's ``WorkspaceWatch`` (made on the tenant's
first call, after its workspace is mounted: a new mount, seen by its device number, gets a new watch), runs
the call, closes the window and puts the report on the result (``ToolResult.changes``). A call that
changed files also gets an audit record pair of its own, tool ``changes`` with ``call_id`` ``<call>.changes``
(the report as the output, its SHA-256 covering the whole of it), since a ``finished`` record's fields are
fixed by the log format; it is submitted without holding the answer, and commits in the same group commit as
the call's own ``finished`` record. Off when the policy says ``change_reports = false`` and for server-side tools.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar

from policies.model import Policy
from server.changes.state import FileState
from server.changes.watch import Change, WorkspaceWatch
from server.tools.context import ToolContext
from toolrunner.config import workspace_path
from toolrunner.manager import CallOutcome
from toolrunner.results import ChangeReport, FileChange

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_LISTED = 100
INLINE_PATHS = 32  # a call that touched at most this many files is settled on the event loop...
INLINE_HASH_MAX = 1024 * 1024  # ...hashing files up to this size there; larger ones in a worker thread
INLINE_EVENT_BYTES = 64 * 1024  # inotify events up to this much (about 1,000) are read on the event loop
MAX_TENANTS = 64  # watched workspaces at once; the least recently used idle one is dropped


def report_of(changes: list[Change], note: str | None, limit: int = MAX_LISTED) -> ChangeReport:
    listed = sorted(changes, key=lambda c: (c.path, c.between_calls))[:limit]
    files = [FileChange(path=c.path, change=c.kind, size=c.after.size if c.after else None,
                        sha256=c.after.sha256 if c.after else None,
                        size_before=c.before.size if c.before else None,
                        sha256_before=c.before.sha256 if c.before else None,
                        between_calls=c.between_calls, overlapping=c.overlapping) for c in listed]
    if len(changes) > limit:
        note = "; ".join(filter(None, [note, f"{len(changes)} files changed, the first {limit} by path are listed"]))
    return ChangeReport(files=files, total=len(changes), truncated=len(changes) > limit, note=note)


class ChangeTracker:
    def __init__(self, sandbox_backend: Any, audit: Any, policy_for: Callable[[str], Policy]) -> None:
        self._sandbox = sandbox_backend
        self._audit = audit
        self._policy_for = policy_for
        self._watches: OrderedDict[str, WorkspaceWatch] = OrderedDict()
        self._in_flight: dict[str, int] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def around(self, ctx: ToolContext, where: str, run: Callable[[], Awaitable[CallOutcome]],
                     policy: Policy | None = None) -> CallOutcome:
        """``run()``, with its change report on the result when the policy asks for one (``policy``: the one the
        dispatcher resolved for this call, so a call looks its tenant's policy up once)."""
        policy = policy or self._policy_for(ctx.tenant_id)
        if where == "server" or not policy.change_reports:
            return _with_changes(await run(), None)
        watch = await self._watch(ctx.tenant_id)
        if watch is None:
            return _with_changes(await run(), None)
        async with self._window(ctx.tenant_id, watch, ctx.call_id) as changed:
            outcome = await run()
        changes = watch.take_between() + changed
        report = await _off_loop(len(changes) > INLINE_PATHS, report_of, changes, watch.note)
        if report.total or report.note:  # its audit record commits with the call's own (group commit)
            self._spawn(self._record(ctx, policy, report))
        return _with_changes(outcome, report)

    @staticmethod
    async def _states(watch: WorkspaceWatch, before: dict[str, Any]) -> dict[str, Any]:
        """The touched paths' states: inline when few and small (the common call), else in a worker thread,
        so hashing a large file never holds the event loop."""
        if not before:
            return {}
        if len(before) <= INLINE_PATHS:
            states = watch.states(before, INLINE_HASH_MAX)
            heavy = [p for p, st in states.items() if st is not None and st.sha256 is None]
            if not heavy:
                return states
            return states | await asyncio.to_thread(watch.states, heavy)
        return await asyncio.to_thread(watch.states, list(before))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @asynccontextmanager
    async def absorbing(self, tenant: str, request_id: str, owns: str | None) -> AsyncIterator[list[Change]]:
        """A window for a files API request: its writes (``owns``, a workspace-relative path, and what is
        beneath it; None for nothing) are its own, listed in the yielded list after the block, not a
        background change for the next tool call. Anything else that changed meanwhile was a background
        process's: it goes to the next tool call as ``between_calls``, unless a call's window saw it too."""
        watch = await self._watch(tenant) if self._policy_for(tenant).change_reports else None
        if watch is None:
            yield []
            return
        changed: list[Change] = []
        try:
            async with self._window(tenant, watch, request_id) as changed:
                yield changed
        finally:  # a failed or cancelled request's window still closed: the others' changes are kept
            theirs = [c for c in changed if not _beneath(c.path, owns)]
            changed[:] = [c for c in changed if _beneath(c.path, owns)]
            # overlapping: a tool call's window saw it as well, and reports it
            watch.hold_between([replace(c, between_calls=True) for c in theirs if not c.overlapping])

    @asynccontextmanager
    async def _window(self, tenant: str, watch: WorkspaceWatch, window_id: str) -> AsyncIterator[list[Change]]:
        """One window on the tenant's watch, a call's or a files request's: what changed while no call ran is
        settled first (the index must hold it before this window's "before"), the window's own changes fill
        the yielded list after the block. Counted in flight while open, so eviction never closes the watch
        under it. Opening and closing run to their end even when the caller is cancelled: the watch's lock
        is then never released while a worker thread still applies a drain."""
        out: list[Change] = []
        self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1
        opening = asyncio.ensure_future(self._open(watch, window_id))
        try:
            try:
                await asyncio.shield(opening)
                yield out
            finally:
                await asyncio.wait({opening})
                out.extend(await asyncio.shield(self._close(watch, window_id)))
        finally:
            self._in_flight[tenant] -= 1

    async def _open(self, watch: WorkspaceWatch, window_id: str) -> None:
        async with watch.lock:
            idle = await _off_loop(await _collect(watch), watch.begin, window_id, collected=True)
            if idle:
                watch.hold_between(await self._settle(watch, idle, between=True))

    async def _close(self, watch: WorkspaceWatch, window_id: str) -> list[Change]:
        async with watch.lock:
            before, overlapping = await _off_loop(await _collect(watch), watch.end, window_id, collected=True)
            return await self._settle(watch, before, overlapping=overlapping)

    async def _settle(self, watch: WorkspaceWatch, before: dict[str, FileState | None], *, between: bool = False,
                      overlapping: set[str] | None = None) -> list[Change]:
        now = await self._states(watch, before)
        return await _off_loop(len(before) > INLINE_PATHS, watch.settle, before, now, between=between,
                               overlapping=overlapping)

    async def _watch(self, tenant: str) -> WorkspaceWatch | None:
        """The tenant's watch on its mounted workspace; None (logged) when it cannot be had."""
        async with self._starting.setdefault(tenant, asyncio.Lock()):
            try:
                manager = await self._sandbox.manager()
                await manager.ensure_started(tenant)  # mounts the quota filesystem; the call does it anyway
                watch = self._watches.get(tenant)
                # the path a tenant's watch was made on is its workspace's (the config is fixed); resolving it
                # again (a realpath, an lstat per component) cost every call ~0.1 ms of the event loop
                path = watch.path if watch is not None else workspace_path(manager.config, tenant)
                if watch is not None and (watch.dead or os.stat(path).st_dev != watch.dev):
                    self._drop(tenant)
                    watch = None
                if watch is None:
                    watch = WorkspaceWatch(path)
                    try:
                        await asyncio.to_thread(watch.start)
                    except BaseException:
                        watch.close()
                        raise
                    self._watches[tenant] = watch
                    self._evict()
                self._watches.move_to_end(tenant)
                return watch
            except Exception as exc:  # the call itself reports what is wrong with the sandbox
                log.warning("no change report for %s: %s", tenant, getattr(exc, "message", None) or exc)
                return None

    def _drop(self, tenant: str) -> None:
        watch = self._watches.pop(tenant, None)
        if watch is not None:
            watch.close()

    def _evict(self) -> None:
        for tenant in list(self._watches)[:-1]:  # the last is the one just added, for the call asking now
            if len(self._watches) <= MAX_TENANTS:
                return
            if not self._in_flight.get(tenant):
                self._drop(tenant)

    async def _record(self, ctx: ToolContext, policy: Policy, report: ChangeReport) -> None:
        try:
            await self._write_record(ctx, policy, report)
        except Exception:
            log.exception("could not record the change report of %s", ctx.call_id)

    async def _write_record(self, ctx: ToolContext, policy: Policy, report: ChangeReport) -> None:
        call_id, tool = f"{ctx.call_id}.changes", "changes"
        await self._audit.started(ctx.tenant_id, call_id=call_id, session_id=ctx.session_id, tool=tool,
                                  input={"call_id": ctx.call_id, "total": report.total}, policy=policy.name,
                                  decision="allowed")
        result = {"tool_name": tool, "output": json.dumps(report.model_dump(mode="json"), sort_keys=True),
                  "exit_code": None, "duration_ms": 0.0, "truncated": report.truncated, "timed_out": False,
                  "limit": None, "error": None}
        await self._audit.finished(ctx.tenant_id, call_id=call_id, session_id=ctx.session_id, tool=tool,
                                   result=result, oom_killed=False, container_id=None, image_id=None,
                                   policy=policy.name, decision="allowed")

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for tenant in list(self._watches):
            self._drop(tenant)


async def _collect(watch: WorkspaceWatch) -> bool:
    """``watch.collect()``, in a worker thread when many events wait: a tenant renaming in a loop queues a full
    kernel queue (16,384 events) before every call, and parsing it on the event loop held every tenant's
    requests for tens of milliseconds per call of that tenant."""
    if watch.backlog() > INLINE_EVENT_BYTES:
        return await asyncio.to_thread(watch.collect)
    return watch.collect()


async def _off_loop(heavy: bool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn`` in a worker thread when its work is heavy (a tree walk, thousands of paths), else right here: a
    thread hop costs milliseconds under load, which the common call must not pay."""
    return await asyncio.to_thread(fn, *args, **kwargs) if heavy else fn(*args, **kwargs)


def _beneath(path: str, owned: str | None) -> bool:
    """Whether ``path`` is ``owned`` or inside it ("" owns the whole workspace, None nothing)."""
    if owned is None:
        return False
    return owned == "" or path == owned or path.startswith(owned + "/")


def _with_changes(outcome: CallOutcome, report: ChangeReport | None) -> CallOutcome:
    """The result's ``changes`` is always the host's: whatever the sandbox put there is replaced."""
    if outcome.result.changes is report:
        return outcome
    return replace(outcome, result=outcome.result.model_copy(update={"changes": report}))


async def watch_changes(tracker: ChangeTracker | None, ctx: ToolContext, where: str,
                        run: Callable[[], Awaitable[CallOutcome]], policy: Policy | None = None) -> CallOutcome:
    """The dispatcher's one hook: ``run()`` with its change report (none without a tracker)."""
    return _with_changes(await run(), None) if tracker is None else await tracker.around(ctx, where, run, policy)


__all__ = ["ChangeTracker", "report_of", "watch_changes"]
