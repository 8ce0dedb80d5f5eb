"""How many tenants' containers may run at once, and which one gives way when the host is full.

In header mode any client can name a new tenant, and each tenant's first call starts a container, so the
number of live containers needs a bound of its own. ``CapacityGate.admit`` is passed through before a
container is started (created, or restarted after an idle stop): under the cap it reserves a slot; at the cap
it asks the manager to stop an *idle* container (no call in flight; its workspace stays and its next call
restarts it) — the one whose stop loses least (no background process, then no REPL, then no session), the
least recently used among equals; with none idle it raises ``SandboxCapacity`` (503 with Retry-After) at once
instead of queueing. The owner's container is never counted nor evicted, so tenants can never lock the
owner out of its own server. Admissions are serialised by one lock, so two starts cannot both take the last
slot; a reservation lasts until the started container is registered as live.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import NamedTuple

from toolrunner.errors import SandboxCapacity

MIN_LIVE_CAP, MAX_LIVE_CAP = 2, 256


Chooser = Callable[[list["Holder"]], Awaitable[str | None]]


class Holder(NamedTuple):
    """A tenant holding a live container: when it was last used and whether a call is in flight."""

    tenant: str
    last_used: float
    busy: bool


def host_memory_bytes() -> int:
    """Physical memory of the host (the engine runs here too)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_live_cap(memory_mb: int, host_bytes: int | None = None) -> int:
    """As many containers as fill half the host's memory at their memory limit (2 to 256).

    Idle containers use about 10 MB each, so this is conservative for the common case and keeps a host whose
    tenants all work at once out of swap and the kernel's OOM killer. 24 GiB and 512 MB give 24.
    """
    host = host_memory_bytes() if host_bytes is None else host_bytes
    per = max(1, memory_mb) * 1024 * 1024
    return max(MIN_LIVE_CAP, min(MAX_LIVE_CAP, host // 2 // per))


def least_recently_used_idle(holders: Iterable[Holder]) -> str | None:
    """The idle tenant used longest ago, or None when every holder has a call in flight."""
    idle = [h for h in holders if not h.busy]
    return min(idle, key=lambda h: h.last_used).tenant if idle else None


class CapacityGate:
    """Admission to the set of live containers (one per tenant; the owner exempt)."""

    def __init__(self, cap: int, *, retry_after_s: float, exempt: str) -> None:
        self.cap = cap
        self.retry_after_s = retry_after_s
        self.exempt = exempt
        self._lock = asyncio.Lock()
        self._starting: set[str] = set()

    @contextlib.asynccontextmanager
    async def admit(self, tenant: str, holders: Callable[[], list[Holder]],
                    evict: Callable[[str], Awaitable[bool]], *, may_evict: bool = True,
                    choose: Chooser | None = None) -> AsyncIterator[None]:
        """Hold a slot for `tenant` while its container starts; evict an idle one or refuse if full.

        `holders` lists the tenants with a live container now; `evict(tenant)` stops that tenant's container
        if it is still idle and says whether it did. ``may_evict=False`` (a speculative prestart) refuses
        rather than evicting. `choose` picks the victim among the idle ones (the manager asks each runner
        what a stop would lose); by default the least recently used.
        """
        if tenant == self.exempt:
            yield
            return
        spared: set[str] = set()  # victims that turned busy before they could be stopped
        async with self._lock:
            while True:
                others = [h for h in holders() if h.tenant not in (tenant, self.exempt)]
                starting = self._starting - {tenant, self.exempt}
                if len(others) + len(starting) < self.cap:
                    break
                idle = [h for h in others if h.tenant not in spared and not h.busy]
                victim = None
                if may_evict and idle:
                    victim = await choose(idle) if choose is not None else least_recently_used_idle(idle)
                if victim is None:
                    raise SandboxCapacity(
                        f"the sandbox host is full: {self.cap} tenant containers are running (or starting) "
                        f"and none is idle; retry in {self.retry_after_s:g} s", retry_after_s=self.retry_after_s)
                if not await evict(victim):
                    spared.add(victim)
            self._starting.add(tenant)
        try:
            yield
        finally:
            self._starting.discard(tenant)

    def live_count(self, holders: Iterable[Holder]) -> int:
        """Containers counted against the cap (live ones plus those starting)."""
        names = {h.tenant for h in holders} | self._starting
        return len(names - {self.exempt})
