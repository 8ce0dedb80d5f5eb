"""``SandboxManager``: one hardened container per tenant, its lifecycle, and every tool call into it.

A tenant's container is created on first need (or ahead of it by ``prestart``), checked with ``docker
inspect`` against what was asked (refused and removed if the engine did not apply a setting), attached once,
and shared by all the tenant's sessions over one ``RunnerChannel`` — never ``docker exec`` per call. Idle
containers are stopped by one background reaper (the workspace stays; the next call starts the container
again). A container that dies mid-call (OOM, ``docker kill``) fails the calls in flight with ``OOM_KILLED``
or ``SANDBOX_DIED`` and is replaced on the next call, workspace intact. A runner that stops answering
(SIGSTOP, wedged) is found by the channel's watchdog within ``unresponsive_after_s`` of a ping: its calls fail
with ``SANDBOX_UNRESPONSIVE``, its container is removed (it would never recover on its own, and a frozen runner
holds the tenant's call slots) and the next call starts a fresh one. On start, ``adopt_or_reap``
re-attaches to this server's running containers whose image hash matches and removes the rest, one at a time;
a re-attached runner is first told to ``reset``, which ends every call the previous server left running
(processes included) and moves this server's frame ids past the old ones.

At most ``max_live_containers`` tenants' containers run at once (``toolrunner.capacity``): at the cap the least
recently used idle one is stopped, and with none idle a start is refused with ``SANDBOX_CAPACITY``. At most
``max_stopped_containers`` stopped ones are kept; older ones are removed (workspaces always stay). A container
the engine could not remove (it was down) is remembered and removed once it answers again.

``shutdown`` closes the channels and leaves the containers running, so that a restarted server adopts them
instead of paying a cold start for every tenant; an image change or ``remove`` retires them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from policies.docker_args import (
    ContainerSpec,
    container_kwargs,
    host_config_mismatches,
    runner_egress_mismatches,
    runner_identity_mismatches,
)
from policies.model import Policy
from toolrunner.attach import AttachStream
from toolrunner.capacity import CapacityGate, Holder
from toolrunner.channel import ChannelError, RunnerChannel
from toolrunner.config import (
    SandboxConfig,
    WorkspacePlan,
    isolation_for,
    prepare_workspace,
    release_workspace,
    validate_tenant,
    workspace_info,
)
from toolrunner.deaths import DEATH_CODES, death_result
from toolrunner.egress.hub import EgressPlumbing
from toolrunner.engine_set import runtime_for
from toolrunner.envbuild.errors import EnvironmentBusy
from toolrunner.errors import SandboxError, SandboxPolicyNotEnforced, SandboxStartFailed, ToolDenied, TooManyCalls
from toolrunner.leftovers import Leftovers
from toolrunner.losses import Losses
from toolrunner.protocol import PROTOCOL_VERSION, encode
from toolrunner.quota import mark_disk_limit, spec_for
from toolrunner.results import ToolResult, error_result
from toolrunner.runtime import ENGINE_LABEL, TENANT_LABEL, ContainerGone, ContainerRuntime

log = logging.getLogger(__name__)
ChunkCallback = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class CallOutcome:
    """A call's result plus what the audit record needs to name the container that ran it."""

    result: ToolResult
    container_id: str | None
    image_id: str | None
    oom_killed: bool = False


@dataclass(eq=False)
class _Sandbox:
    tenant: str
    container_id: str
    policy: Policy
    stream: AttachStream
    channel: RunnerChannel
    last_used: float = field(default_factory=time.monotonic)
    death: asyncio.Future[bool] | None = None

    @property
    def alive(self) -> bool:
        """Usable for the next call: not retired, its stream open, its channel not broken (a broken channel
        only fails calls, so the next call must get a fresh container instead)."""
        return self.death is None and not self.stream.closed and self.channel.broken is None

    @property
    def unresponsive(self) -> bool:
        return self.channel.broken_code == "SANDBOX_UNRESPONSIVE"


class SandboxManager:
    """Async API over the tenants' containers (docs/design.md §2)."""

    def __init__(self, config: SandboxConfig, policy_for_tenant: Callable[[str], Policy], *,
                 backend: ContainerRuntime | None = None, egress: EgressPlumbing | None = None) -> None:
        self.config = config
        self._egress = egress  # allowlist tenants' proxy sockets and keys (docs/egress.md)
        self._policy_for = policy_for_tenant
        self._own_backend = backend is None
        self.backend: ContainerRuntime = backend or runtime_for(config.docker_hosts, config.docker_timeout_s)
        self._sandboxes: dict[str, _Sandbox] = {}
        self._stopped: dict[str, str] = {}  # tenant -> container id stopped for idleness
        self._locks: dict[str, asyncio.Lock] = {}
        self._in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._image_id: str | None = None
        self.capacity = CapacityGate(config.max_live_containers, retry_after_s=config.capacity_retry_after_s,
                                     exempt=config.owner_tenant_id)
        self._leftovers = Leftovers(self.backend)  # containers to remove once the engine answers again
        self._closing = False
        self._plans: dict[str, WorkspacePlan] = {}  # tenant -> its workspace as last prepared (quota, writable)
        self.losses = Losses()  # what stops of containers lost, told to the sessions that had state there
        self._held: dict[str, dict[str, int] | None] = {}  # what each eviction candidate's runner last said
        self._images: dict[str, str] = {}  # tenant -> image of its live or stopped container (docs/environments.md)
        self._image_ids: dict[str, str] = {}  # environment image -> engine id, for the audit record
        self.runner_caps: dict[str, bool] | None = None  # what the sandbox image's runner can run (its hello)

    # ---- calls -------------------------------------------------------------------------------------

    async def call(self, tenant: str, session: str, tool: str, input: dict[str, Any], *,
                   timeout_s: float | None = None, on_chunk: ChunkCallback | None = None,
                   image: str | None = None, call_id: str | None = None) -> CallOutcome:
        """Run one tool call in the tenant's container (from ``image``, an environment's, else the sandbox
        image); failures inside the call come back as results. ``call_id`` (the audit's id of the call) goes
        to the runner, which names it in the proxy credential of every process the call starts."""
        policy = self._policy_for(validate_tenant(tenant))
        if not policy.allows(tool):
            raise ToolDenied(f"tool {tool!r} is not allowed by policy {policy.name!r}")
        in_flight = self._in_flight.get(tenant, 0)
        if in_flight >= policy.max_concurrent_calls:
            raise TooManyCalls(f"{in_flight} calls already running (policy {policy.name!r} allows "
                               f"{policy.max_concurrent_calls})", retry_after_s=1.0)
        self._in_flight[tenant] = in_flight + 1
        try:
            sandbox = await self._ensure(tenant, image=image, calling=True)
            image_id = await self._image_id_of(image)
            lost = self.losses.notice(tenant, session, tool)
            if lost is not None:  # its shell, REPL and jobs went with an earlier container: say so, once
                return CallOutcome(lost, sandbox.container_id, image_id)
            self.losses.saw(tenant, session)
            timeout = policy.effective_timeout(timeout_s)
            sandbox.last_used = time.monotonic()
            try:
                # The channel has its own deadline (plus, past it, up to one unanswered ping); this outer one
                # (no extra task, unlike wait_for) only guards the host against a channel bug.
                async with asyncio.timeout(timeout + 2 * self.config.call_grace_s
                                           + 2 * self.config.unresponsive_after_s + 1):
                    result = await sandbox.channel.call(session, tool, input, timeout_s=timeout,
                                                        output_cap=policy.output_cap_bytes, on_chunk=on_chunk,
                                                        call_id=call_id)
            except (ConnectionError, OSError, EOFError) as exc:
                result = error_result(tool, "SANDBOX_DIED", f"the sandbox connection broke: {exc}")
            except TimeoutError:
                result = error_result(tool, "TIMEOUT", f"no answer from the sandbox within {timeout:.0f} s",
                                      timed_out=True, limit="timeout")
            finally:
                sandbox.last_used = time.monotonic()
            plan = self._plans.get(tenant)
            result = mark_disk_limit(plan.quota if plan else None, result, input)
            oom = False
            died = (result.error is not None and result.error.code in DEATH_CODES) or not sandbox.alive
            if died and not self._closing:  # at shutdown the channel was closed on purpose: keep the container
                result, oom = await self._after_death(sandbox, result)
                self.losses.closed(tenant, session)  # this call's own result already says the sandbox died
            return CallOutcome(result, sandbox.container_id, image_id, oom)
        finally:
            self._in_flight[tenant] -= 1

    async def close_session(self, tenant: str, session: str) -> None:
        """End a session's shell, REPL and background processes (nothing to do if no container runs)."""
        sandbox = self._sandboxes.get(validate_tenant(tenant))
        self.losses.closed(tenant, session)
        try:
            if sandbox is None or not sandbox.alive:
                return
            try:
                await asyncio.wait_for(sandbox.channel.close_session(session), 10)
            except (TimeoutError, ConnectionError, OSError) as exc:
                log.warning("close_session %s/%s failed: %s", tenant, session, exc)
        finally:  # after the close: its processes are gone, and its calls' credentials name nothing any more
            if self._egress is not None:
                self._egress.session_closed(tenant, session)

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def prestart(self, tenant: str) -> None:
        """Start the tenant's container in the background (returns at once; errors are logged)."""
        validate_tenant(tenant)
        if tenant in self._sandboxes and self._sandboxes[tenant].alive:
            return
        self._spawn(self._prestart(tenant), f"prestart-{tenant}")

    async def _prestart(self, tenant: str) -> None:
        try:
            await self._ensure(tenant, may_evict=False)  # speculative: never stops another tenant's container
        except SandboxError as exc:
            log.warning("prestart of %s failed: %s", tenant, exc)

    async def ensure_started(self, tenant: str) -> str:
        """Start the tenant's container now if needed; returns its id."""
        return (await self._ensure(validate_tenant(tenant))).container_id

    async def _image_id_of(self, image: str | None) -> str | None:
        if image is None or image == self.config.image:
            return self._image_id
        if image not in self._image_ids:
            self._image_ids[image] = await self.backend.image_id(image)
        return self._image_ids[image]

    async def _ensure(self, tenant: str, *, may_evict: bool = True, image: str | None = None,
                      calling: bool = False) -> _Sandbox:
        """The tenant's live container from ``image``; one from another image is replaced (workspace kept)
        unless other calls run in it (``SANDBOX_ENVIRONMENT_BUSY``): one container per tenant keeps the cap."""
        wanted = image or self.config.image
        sandbox = self._sandboxes.get(tenant)
        if sandbox is not None and sandbox.alive and self._images.get(tenant, self.config.image) == wanted:
            return sandbox
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            sandbox = self._sandboxes.get(tenant)
            current = self._images.get(tenant, self.config.image)
            if sandbox is not None and sandbox.alive and current == wanted:
                return sandbox
            if sandbox is not None and sandbox.alive:  # another environment's container
                if self._in_flight.get(tenant, 0) > (1 if calling else 0):
                    raise EnvironmentBusy(f"the sandbox of {tenant} runs {current} with calls in flight; "
                                          f"it is replaced by {wanted} once they end")
                await self._after_death(sandbox, None, reason="replaced")  # by another environment
            elif sandbox is not None:
                await self._after_death(sandbox, None)
                sandbox = None
            self._start_reaper()
            if self._image_id is None:
                self._image_id = await self.backend.image_id(self.config.image)
            stopped = self._stopped.pop(tenant, None)  # taken first: making room never removes our own
            if stopped is not None and current != wanted:  # stopped from another environment's image
                await self._remove_quietly(stopped)
                stopped = None
            admitted = False
            try:
                async with self.capacity.admit(tenant, self._holders, self._evict, may_evict=may_evict,
                                               choose=self._choose_victim):
                    admitted = True
                    sandbox = await self._start(tenant, stopped, wanted)
                    self._sandboxes[tenant] = sandbox
                    self._images[tenant] = wanted
                    if wanted == self.config.image and isinstance(caps := sandbox.channel.info.get("caps"), dict):
                        self.runner_caps = {str(k): v is True for k, v in caps.items()}  # a fresh hello's
            finally:
                if not admitted and stopped is not None:  # refused: it stays stopped for a later call
                    self._stopped[tenant] = stopped
            if self._leftovers:
                self._spawn(self._leftovers.sweep(), "sweep-leftovers")
            return sandbox

    async def _start(self, tenant: str, stopped: str | None, image: str) -> _Sandbox:
        """Restart the tenant's stopped container, or (failing that, or with none) create a new one."""
        if stopped is not None:
            try:
                return await self._open(tenant, stopped, start=True)
            except (SandboxError, ContainerGone, OSError) as exc:
                log.info("restarting %s's stopped container failed (%s); creating a new one", tenant, exc)
                await self._remove_quietly(stopped)
        return await self._create(tenant, image)

    def _holders(self) -> list[Holder]:
        """Tenants whose container is live now; one whose lock is held is busy (starting, stopping…)."""
        return [Holder(t, s.last_used, bool(self._in_flight.get(t, 0)) or self._locks.setdefault(
                    t, asyncio.Lock()).locked()) for t, s in self._sandboxes.items() if s.alive]

    async def _choose_victim(self, idle: list[Holder]) -> str | None:
        """The idle container whose stop loses least: each runner is asked what it holds (one ``stats``
        frame, in parallel, 2 s at most); no background process first, then no REPL, then no session, the
        least recently used among equals. A runner that does not answer holds nothing we could keep."""
        async def ask(h: Holder) -> dict[str, int] | None:
            sandbox = self._sandboxes.get(h.tenant)
            return await sandbox.channel.holds() if sandbox is not None and sandbox.alive else None

        held = await asyncio.gather(*(ask(h) for h in idle))
        self._held = {h.tenant: x for h, x in zip(idle, held, strict=True)}

        def cost(pair: tuple[Holder, dict[str, int] | None]) -> tuple[bool, bool, bool, float]:
            h, x = pair
            x = x or {}
            return x.get("background", 0) > 0, x.get("repls", 0) > 0, x.get("sessions", 0) > 0, h.last_used

        return min(zip(idle, held, strict=True), key=cost)[0].tenant if idle else None

    async def _evict(self, tenant: str) -> bool:
        """Stop the tenant's container to free a slot, if it is still idle; True if it was stopped."""
        sandbox = self._sandboxes.get(tenant)
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        if sandbox is None or not sandbox.alive or self._in_flight.get(tenant, 0) or lock.locked():
            return False
        held = self._held.pop(tenant, None)
        log.info("evicting the idle sandbox of %s to make room (cap %d); it held %s", tenant, self.capacity.cap,
                 held)
        await self._stop_idle(tenant, sandbox, reason="evicted", held=held)
        return self._sandboxes.get(tenant) is not sandbox

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _kwargs_for(self, tenant: str, policy: Policy, image: str | None = None) -> dict[str, Any]:
        plan = prepare_workspace(self.config, tenant, spec_for(policy.disk_mb, policy.disk_inodes))
        self._plans[tenant] = plan
        labels = {**self.config.extra_labels, "openanalyst.managed": "1", TENANT_LABEL: tenant,
                  "openanalyst.server": self.config.instance_id,
                  "openanalyst.image_hash": self.config.image_hash, "openanalyst.policy": policy.name}
        egress_dir, egress_key = (self._egress.prepare(tenant) if policy.network == "allowlist"
                                  and self._egress is not None else (None, None))
        spec = ContainerSpec(image=image or self.config.image, workspace=plan.path, uid=plan.uid, gid=plan.gid,
                             isolation=plan.isolation, labels=labels, command=self.config.runner_command,
                             runtime=self.config.runtime, egress_dir=egress_dir, egress_key=egress_key)
        return container_kwargs(policy, spec)

    async def _create(self, tenant: str, image: str) -> _Sandbox:
        policy = self._policy_for(tenant)
        kwargs = await asyncio.to_thread(self._kwargs_for, tenant, policy, image)
        container_id = await self.backend.create(kwargs)
        try:
            await self._verify(container_id, kwargs)
            return await self._open(tenant, container_id, start=True)
        except BaseException:
            await asyncio.shield(self._remove_quietly(container_id))
            raise

    async def _verify(self, container_id: str, kwargs: dict[str, Any]) -> None:
        problems = host_config_mismatches(await self.backend.inspect(container_id), kwargs)
        if problems:
            log.error("refusing container %s: %s", container_id[:12], "; ".join(problems))
            raise SandboxPolicyNotEnforced("the container engine did not apply the sandbox settings: "
                                           + "; ".join(problems))

    async def _open(self, tenant: str, container_id: str, *, start: bool) -> _Sandbox:
        """Attach (before start, so no output is missed), start if asked, and shake hands.

        A re-attached runner said its hello to an earlier server; the host replays a hello locally so the
        channel starts routing, then a ping proves the runner is there and its stream is in sync.
        """
        stream = await self.backend.open_attach(container_id)
        channel = RunnerChannel(stream.reader, stream.writer, grace_s=self.config.call_grace_s,
                                unresponsive_after_s=self.config.unresponsive_after_s)
        try:
            if start:
                await self.backend.start(container_id)
                hello = await channel.hello(self.config.start_timeout_s)
                if self.config.runner_command is None:  # the image's runner (tests may run another program)
                    problems = runner_identity_mismatches(hello.get("identity"),
                                                          isolation_for(self.config, tenant))
                    problems += runner_egress_mismatches(hello.get("egress"), self._policy_for(tenant).network)
                    if problems:
                        log.error("refusing container %s: %s", container_id[:12], "; ".join(problems))
                        raise SandboxPolicyNotEnforced("the runner does not hold what the policy asks: "
                                                       + "; ".join(problems))
            else:
                stream.reader.feed_data(encode({"type": "hello", "version": PROTOCOL_VERSION, "pid": None,
                                                "caps": {}, "replayed": True}))
                await channel.hello(5)
                await channel.ping()
                await self._reset(channel, container_id)
        except (ChannelError, TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            await asyncio.sleep(0.05)  # let the last stderr bytes of a crashing runner arrive
            tail = stream.stderr_tail(1000).strip()[-500:]
            await channel.close()
            await stream.close()
            raise SandboxStartFailed(f"the runner in {container_id[:12]} did not answer: {exc}; "
                                     f"stderr: {tail or '(empty)'}") from exc
        except BaseException:
            await channel.close()
            await stream.close()
            raise
        return _Sandbox(tenant, container_id, self._policy_for(tenant), stream, channel)

    async def _reset(self, channel: RunnerChannel, container_id: str) -> None:
        """End the calls a previous server left in flight before this one sends any (docs/sandbox-faults.md)."""
        reply = await channel.reset(self.config.start_timeout_s)
        left, cancelled = reply.get("left"), reply.get("cancelled")
        if left != 0:
            raise SandboxStartFailed(f"{left} call(s) of the previous server did not end within "
                                     f"{self.config.start_timeout_s:g} s of a reset")
        if cancelled:
            log.warning("adopted sandbox %s: ended %s call(s) the previous server left running",
                        container_id[:12], cancelled)

    async def _after_death(self, sandbox: _Sandbox, result: ToolResult | None, *,
                           reason: str = "died") -> tuple[ToolResult, bool]:
        """Find out why a container died (once, shared by every call it failed) and retire it."""
        if sandbox.death is None:
            sandbox.death = asyncio.ensure_future(self._examine_death(sandbox, deliberate=reason != "died"))
        if self._sandboxes.get(sandbox.tenant) is sandbox:
            del self._sandboxes[sandbox.tenant]
            self.losses.stopped(sandbox.tenant, sandbox.container_id, reason)
        oom = await asyncio.shield(sandbox.death)
        return death_result(result, unresponsive=sandbox.unresponsive, oom=oom,
                            unresponsive_after_s=self.config.unresponsive_after_s,
                            memory_mb=sandbox.policy.memory_mb), oom and not sandbox.unresponsive

    async def _examine_death(self, sandbox: _Sandbox, *, deliberate: bool = False) -> bool:
        """Close the container's channel and remove it; when it died on its own, say how (after waiting up to
        3 s for it to stop). A deliberate end (``DELETE /v1/sandbox``, another image) has nothing to examine:
        the runner is still running and would only be waited for, and logged as a death."""
        with contextlib.suppress(Exception):
            await sandbox.channel.close()
        await sandbox.stream.close()
        if deliberate:
            log.info("sandbox %s of %s removed", sandbox.container_id[:12], sandbox.tenant)
            await self._remove_quietly(sandbox.container_id)
            return False
        if sandbox.unresponsive:  # still running, frozen: nothing to wait for, and nothing will change
            log.warning("sandbox %s of %s is unresponsive (%s); removing it; stderr: %s",
                        sandbox.container_id[:12], sandbox.tenant, sandbox.channel.broken,
                        sandbox.stream.stderr_tail(500).strip())
            await self._remove_quietly(sandbox.container_id)
            return False
        oom = False
        try:
            await self.backend.wait_stopped(sandbox.container_id, 3)
            state = (await self.backend.inspect(sandbox.container_id)).get("State") or {}
            oom = bool(state.get("OOMKilled"))
            log.warning("sandbox %s of %s died: status %s, exit %s, OOMKilled %s; stderr: %s",
                        sandbox.container_id[:12], sandbox.tenant, state.get("Status"), state.get("ExitCode"),
                        oom, sandbox.stream.stderr_tail(500).strip())
        except (SandboxError, ContainerGone) as exc:
            log.warning("sandbox %s of %s is gone: %s", sandbox.container_id[:12], sandbox.tenant, exc)
        await self._remove_quietly(sandbox.container_id)
        return oom

    async def _remove_quietly(self, container_id: str) -> None:
        await self._leftovers.remove(container_id)

    # ---- reaping, adoption, inspection ------------------------------------------------------------

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap_idle(), name="sandbox-reaper")

    async def _reap_idle(self) -> None:
        interval = max(0.5, min(self.config.idle_timeout_s / 4, 30.0))
        while True:
            await asyncio.sleep(interval)
            if self._leftovers:
                await self._leftovers.sweep()
            now = time.monotonic()
            for tenant, sandbox in list(self._sandboxes.items()):
                if self._in_flight.get(tenant, 0) or now - sandbox.last_used < self.config.idle_timeout_s:
                    continue
                try:
                    await self._stop_idle(tenant, sandbox, reason="idle")
                except (SandboxError, ContainerGone) as exc:
                    log.warning("stopping idle sandbox of %s failed: %s", tenant, exc)

    async def _stop_idle(self, tenant: str, sandbox: _Sandbox, *, reason: str,
                         held: dict[str, int] | None = None) -> None:
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            if self._sandboxes.get(tenant) is not sandbox or self._in_flight.get(tenant, 0):
                return
            del self._sandboxes[tenant]
            self.losses.stopped(tenant, sandbox.container_id, reason, held)
            sandbox.death = asyncio.get_running_loop().create_future()
            sandbox.death.set_result(False)
            await sandbox.channel.close()
            await sandbox.stream.close()
            try:
                # No grace: an idle runner has nothing to finish (its tmpfs and processes go either way), and
                # its orderly exit takes 1-2 s that a tenant waiting for this slot would pay.
                await self.backend.stop(sandbox.container_id, grace_s=0)
            except ContainerGone:
                return
            except SandboxError:
                self._leftovers.add(sandbox.container_id)  # not known to be stopped: never restart it
                raise
            self._stopped[tenant] = sandbox.container_id
            log.info("stopped idle sandbox %s of %s", sandbox.container_id[:12], tenant)
            while len(self._stopped) > self.config.max_stopped_containers:
                oldest = next(iter(self._stopped))
                await self._remove_quietly(self._stopped.pop(oldest))
                self._spawn(self._release_unused(oldest), f"release-{oldest}")

    async def _release_unused(self, tenant: str) -> None:
        """Unmount the quota filesystem of a tenant left with no container (loop devices stay bounded by the
        container caps); under its lock, so a start of that tenant meanwhile keeps its mount."""
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            if tenant not in self._sandboxes and tenant not in self._stopped:
                self._plans.pop(tenant, None)
                await asyncio.to_thread(release_workspace, self.config, tenant)

    async def adopt_or_reap(self) -> dict[str, list[str]]:
        """Re-attach to this server's running, current containers; remove the others, one at a time."""
        adopted: list[str] = []
        removed: list[str] = []
        gone: set[str] = set()
        for row in await self.backend.list_managed(self.config.instance_id):
            container_id = str(row["Id"])
            labels: dict[str, str] = row.get("Labels") or {}
            tenant = labels.get(TENANT_LABEL, "")
            current = (row.get("State") == "running" and tenant not in self._sandboxes and tenant not in self._stopped
                       and labels.get("openanalyst.image_hash") == self.config.image_hash)
            full = self.capacity.live_count(self._holders()) >= self.capacity.cap
            if current and full and tenant != self.config.owner_tenant_id:
                try:  # more running than the cap allows now (it was lowered): keep it stopped, not adopted
                    await self.backend.stop(container_id, grace_s=0)
                    self._stopped[tenant] = container_id
                    continue
                except (SandboxError, ContainerGone) as exc:
                    log.warning("could not stop %s of %r beyond the cap: %s", container_id[:12], tenant, exc)
                    current = False
            if current:
                try:
                    validate_tenant(tenant)
                    kwargs = await asyncio.to_thread(self._kwargs_for, tenant, self._policy_for(tenant))
                    await self._verify(container_id, kwargs)
                    self._sandboxes[tenant] = await self._open(tenant, container_id, start=False)
                    self._images[tenant] = str(row.get("Image") or self.config.image)
                    adopted.append(container_id)
                    continue
                except (SandboxError, ContainerGone, OSError) as exc:
                    log.warning("not adopting %s of %r: %s", container_id[:12], tenant, exc)
            await self._remove_quietly(container_id)
            removed.append(container_id)
            gone.add(tenant)
        await asyncio.to_thread(self._release_orphans, gone)
        if adopted:
            self._start_reaper()
            self._image_id = await self.backend.image_id(self.config.image)
        return {"adopted": adopted, "removed": removed}

    def _release_orphans(self, tenants: set[str]) -> None:
        """At start, unmount the quota filesystems (and the owner's guard) of tenants left with no container:
        those whose containers adoption removed, and any image still mounted from an earlier run whose
        container is gone; otherwise each restart would leak their mounts and loop devices, untracked."""
        quota_dir = self.config.data_dir.resolve() / "quota"
        with contextlib.suppress(OSError):
            tenants = tenants | {image.stem for image in quota_dir.glob("*.ext4")}
        for tenant in sorted(tenants):
            if tenant in self._sandboxes or tenant in self._stopped:
                continue
            try:
                validate_tenant(tenant)
            except SandboxError:
                continue
            if release_workspace(self.config, tenant):
                log.info("released the workspace mount of %s: its container is gone", tenant)

    async def remove(self, tenant: str) -> None:
        """Throw the tenant's container away (the workspace stays)."""
        validate_tenant(tenant)
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            sandbox = self._sandboxes.get(tenant)
            if sandbox is not None:
                await self._after_death(sandbox, None, reason="removed")
            stopped = self._stopped.pop(tenant, None)
            if stopped is not None:
                await self._remove_quietly(stopped)
            self._plans.pop(tenant, None)
            self._images.pop(tenant, None)
            await asyncio.to_thread(release_workspace, self.config, tenant)  # unmount its quota filesystem

    async def info(self, tenant: str) -> dict[str, Any]:
        """What the tenant's sandbox is and how much it uses now."""
        policy = self._policy_for(validate_tenant(tenant))
        out: dict[str, Any] = {
            "tenant": tenant, "policy": policy.name, "image": self._images.get(tenant, self.config.image),
            "image_id": self._image_ids.get(self._images.get(tenant, ""), self._image_id),
            "limits": {"cpus": policy.cpus, "memory_mb": policy.memory_mb, "pids": policy.pids,
                       "tmpfs_mb": policy.tmpfs_mb, "network": policy.network,
                       "max_concurrent_calls": policy.max_concurrent_calls,
                       "default_timeout_s": policy.default_timeout_s, "max_timeout_s": policy.max_timeout_s,
                       "output_cap_bytes": policy.output_cap_bytes},
            "egress": policy.egress.summary() if policy.network == "allowlist" else None,
            "calls_in_flight": self._in_flight.get(tenant, 0),
            "workspace": workspace_info(self.config, tenant, self._plans.get(tenant),
                                        spec_for(policy.disk_mb, policy.disk_inodes)),
            "last_stop": stop.view() if (stop := self.losses.last(tenant)) is not None else None,
        }
        sandbox = self._sandboxes.get(tenant)
        if sandbox is None or not sandbox.alive:
            stopped = self._stopped.get(tenant)
            return {**out, "state": "stopped" if stopped else "absent", "container_id": stopped,
                    "usage": None}
        try:
            attrs = await self.backend.inspect(sandbox.container_id)
            usage = await self.backend.usage(sandbox.container_id)
        except ContainerGone:  # removed behind our back: retire it, the next call starts a fresh one
            await self._after_death(sandbox, None)
            return {**out, "state": "absent", "container_id": None, "usage": None}
        state = attrs.get("State") or {}
        return {**out, "state": state.get("Status"), "container_id": sandbox.container_id,
                "engine": ((attrs.get("Config") or {}).get("Labels") or {}).get(ENGINE_LABEL),
                "started_at": state.get("StartedAt"),
                "idle_s": round(time.monotonic() - sandbox.last_used, 3),
                "usage": usage}

    async def shutdown(self, *, stop_containers: bool = False) -> None:
        """Close every channel; containers keep running for the next start to adopt (or stop them)."""
        self._closing = True
        tasks = [*self._tasks, *([self._reaper] if self._reaper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for tenant, sandbox in list(self._sandboxes.items()):
            del self._sandboxes[tenant]
            with contextlib.suppress(Exception):
                await sandbox.channel.close()
            await sandbox.stream.close()
            if stop_containers:
                with contextlib.suppress(SandboxError, ContainerGone):
                    await self.backend.stop(sandbox.container_id, grace_s=1)
        if self._own_backend:
            self.backend.close()
