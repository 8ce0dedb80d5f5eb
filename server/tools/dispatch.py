"""One path for every tool call, whoever asks (the agent loop, a sub-agent, the direct tool API):

    validate → policy decision → audit `started` → `tool_call` event → run (sandbox or server) →
    audit `finished` → `tool_result` event

Denied and failed calls take the same path, so the audit log has a `finished` record for every call made and
a session's event stream shows every call. Domain errors (unknown tool, bad input, denial, over the cap) are
raised to the caller after they are recorded; failures inside a call come back as a result with `error` set.

A call refused before it runs (unknown tool, input over the JSON limits or not matching the tool's schema) is
recorded too, as `denied` with its real error code: its `started` record holds a small, shallow copy of what
was sent (``server.jsonlimits.bounded_form``) and the sha256 of the raw request bytes, never the raw value,
which may be too deep for any recursive reader of the log. Every call, server-side tools included, counts
toward the tenant's policy cap of concurrent calls (429 `TOO_MANY_CALLS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from policies.model import Policy
from server.changes.tracker import ChangeTracker, watch_changes
from server.contract.events import ToolCallEvent, ToolResultEvent
from server.errors import ApiError, Forbidden, TooManyRequests
from server.jsonlimits import JsonLimits, bounded_form, check_value, sha256_of_value
from server.tools.context import ToolContext
from server.tools.registry import ToolRegistry, out_of_scope
from toolrunner.manager import CallOutcome
from toolrunner.results import NetworkSummary, ToolResult, error_result

if TYPE_CHECKING:
    from server.approvals.gate import ApprovalGate

ChunkCallback = Callable[[str, str], Awaitable[None]]
# The codes of calls refused by `check` before any event: recorded in the audit log, but no tool_result event.
REFUSED_BEFORE_RUNNING = frozenset({"TOOL_NOT_FOUND", "INVALID_TOOL_INPUT", "JSON_TOO_DEEP", "JSON_TOO_LARGE",
                                    "APPROVAL_REQUIRED", "APPROVAL_DENIED", "APPROVAL_TIMEOUT",
                                    "APPROVAL_CALL_ID_REUSED"})


class AuditSink(Protocol):
    async def started(self, tenant_id: str, *, call_id: str, session_id: str | None, tool: str,
                      input: dict[str, Any], policy: str, decision: str, reason: str | None = None) -> int: ...

    async def finished(self, tenant_id: str, *, call_id: str, session_id: str | None, tool: str,
                       result: dict[str, Any], oom_killed: bool, container_id: str | None,
                       image_id: str | None, policy: str, decision: str) -> int: ...


class SandboxBackend(Protocol):
    async def run(self, tenant_id: str, session_id: str, tool: str, args: dict[str, Any], *,
                  timeout_s: float | None, on_chunk: ChunkCallback | None,
                  call_id: str | None = None) -> CallOutcome: ...

    async def close_session(self, tenant_id: str, session_id: str) -> None: ...


class NetworkCalls(Protocol):
    """Ties a call's egress connections to it and sums them up (``toolrunner.egress.calls.CallLedger``)."""

    def begin(self, tenant: str, call_id: str, sandbox_session: str | None) -> None: ...

    async def end(self, tenant: str, call_id: str, sandbox_session: str | None) -> NetworkSummary | None: ...


ONESHOT_SESSION = "oneshot-"  # the prefix of a call's throwaway runner session; stored sessions are sess_...


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(12)


@dataclass(frozen=True)
class _CallRecord:
    """The fields both audit records of one call share."""

    tenant_id: str
    call_id: str
    session_id: str | None
    tool: str
    policy: str


class ToolDispatcher:
    def __init__(self, registry: ToolRegistry, sandbox: SandboxBackend, audit: AuditSink,
                 policy_for: Callable[[str], Policy], json_limits: JsonLimits | None = None,
                 network: NetworkCalls | None = None) -> None:
        self.registry = registry
        self.network = network
        self._sandbox = sandbox
        self._audit = audit
        self._policy_for = policy_for
        self.json_limits = json_limits or JsonLimits()
        self._in_flight: dict[str, int] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.changes: ChangeTracker | None = None  # set by server.wiring (docs/changes.md)
        self.approvals: ApprovalGate | None = None  # set by server.wiring (docs/approvals.md)

    def allowed(self, tenant_id: str, name: str) -> bool:
        return self._policy_for(tenant_id).allows(name)

    def storable(self, raw_input: Any) -> Any:
        """What a conversation keeps of a model's tool input: the input, or past the JSON limits the audit's
        bounded copy (a stored value too deep for pydantic made every later read of the session a 500)."""
        try:
            check_value(raw_input, self.json_limits)
        except ApiError:
            return bounded_form(raw_input)
        return raw_input

    async def check(self, ctx: ToolContext, name: str, raw_input: Any, *, call_id: str | None = None,
                    raw_sha256: str | None = None) -> dict[str, Any]:
        """The checked input, or the domain error raised after the refused call is recorded.

        ``raw_sha256`` is the hash of the raw request bytes when the call came over HTTP; otherwise the hash
        is taken over the canonical JSON of ``raw_input`` (computed without recursion).
        """
        try:
            self.registry.get(name)
            check_value(raw_input, self.json_limits)
            args = self.registry.validate(name, raw_input)
            if self.approvals is not None:  # nobody to ask outside a session's turn: 403 APPROVAL_REQUIRED
                self.approvals.refuse_outside_turn(ctx, self._policy_for(ctx.tenant_id), name, args)
            return args
        except ApiError as exc:
            sent = {"refused_input": bounded_form(raw_input),
                    "raw_sha256": raw_sha256 or sha256_of_value(raw_input)}
            await self._record_refusal(ctx, name, sent, exc, call_id)
            raise

    async def refuse_unparsed(self, ctx: ToolContext, name: str, error: ApiError, *, raw_sha256: str,
                              call_id: str | None = None) -> None:
        """Record a call whose request body was refused unparsed (over the JSON limits), then raise ``error``.

        Nothing of the body is kept but its hash: it was never parsed, so there is no input to show.
        """
        sent = {"refused_input": None, "raw_sha256": raw_sha256}
        await self._record_refusal(ctx, name, sent, error, call_id)
        raise error

    async def _record_refusal(self, ctx: ToolContext, name: str, sent: dict[str, Any], exc: ApiError,
                              call_id: str | None) -> None:
        ctx.call_id = call_id or new_call_id()
        policy = self._policy_for(ctx.tenant_id)
        rec = _CallRecord(ctx.tenant_id, ctx.call_id, ctx.session_id, name[:200], policy.name)
        reason = f"refused before running: {exc.message}"
        await self._started(rec, sent, "denied", reason)
        await self._finished(rec, CallOutcome(error_result(name[:200], exc.code, exc.message), None, None),
                             "denied")

    async def run(self, ctx: ToolContext, name: str, raw_input: Any, *, on_chunk: ChunkCallback | None = None,
                  call_id: str | None = None, raw_sha256: str | None = None) -> ToolResult:
        args = await self.check(ctx, name, raw_input, call_id=call_id, raw_sha256=raw_sha256)
        return await self.run_checked(ctx, name, args, on_chunk=on_chunk, call_id=call_id)

    async def run_checked(self, ctx: ToolContext, name: str, args: dict[str, Any], *,
                          on_chunk: ChunkCallback | None = None, call_id: str | None = None) -> ToolResult:
        """``run`` for ``args`` that ``check`` returned (the HTTP route checks before a stream starts)."""
        tool = self.registry.get(name)
        ctx.call_id = call_id or new_call_id()
        policy = self._policy_for(ctx.tenant_id)
        rec = _CallRecord(ctx.tenant_id, ctx.call_id, ctx.session_id, name, policy.name)
        denial = (("TOOL_DENIED", f"tool {name!r} is not allowed by policy {policy.name!r}")
                  if not policy.allows(name) else out_of_scope(name, ctx.skill_scope))
        if denial is not None:
            code, reason = denial
            await self._record_denial(rec, args, code, reason)
            raise Forbidden(code, reason)

        approval = None if self.approvals is None else await self.approvals.gate(
            ctx, policy, name, args, partial(self._record_denial, rec, args))  # always_ask: a person decides
        await self._started(rec, args, "allowed", approval)
        await ctx.emit(ToolCallEvent(call_id=ctx.call_id, tool_name=name, arguments=args))
        outcome = CallOutcome(error_result(name, "INTERNAL", "the call did not finish"), None, None)
        try:
            with self._slot(ctx.tenant_id, policy):
                outcome = await watch_changes(self.changes, ctx, tool.where,  # the call's change report
                                              lambda: self._networked(ctx, tool.where, name, args, on_chunk), policy)
        except ApiError as exc:
            outcome = CallOutcome(error_result(name, exc.code, exc.message), None, None)
            raise
        except asyncio.CancelledError:
            outcome = CallOutcome(error_result(name, "CANCELLED", "the call was interrupted"), None, None)
            raise
        finally:
            # The record and the event are written even when the caller is being cancelled.
            await asyncio.shield(self._finished(rec, outcome, "allowed"))
            await asyncio.shield(ctx.emit(ToolResultEvent.of(ctx.call_id, outcome.result)))
        return outcome.result

    @contextlib.contextmanager
    def _slot(self, tenant_id: str, policy: Policy) -> Iterator[None]:
        """One of the tenant's concurrent-call slots, for sandbox and server-side tools alike."""
        in_flight = self._in_flight.get(tenant_id, 0)
        if in_flight >= policy.max_concurrent_calls:
            raise TooManyRequests("TOO_MANY_CALLS", f"{in_flight} calls already running (policy {policy.name!r} "
                                  f"allows {policy.max_concurrent_calls})", retry_after_s=1.0)
        self._in_flight[tenant_id] = in_flight + 1
        try:
            yield
        finally:
            left = self._in_flight[tenant_id] - 1
            if left:
                self._in_flight[tenant_id] = left
            else:
                del self._in_flight[tenant_id]

    async def _networked(self, ctx: ToolContext, where: str, name: str, args: dict[str, Any],
                         on_chunk: ChunkCallback | None) -> CallOutcome:
        """``_execute`` with the call's egress connections tied to it; the result's ``network`` is always the
        host's own summary, whatever the sandbox sent."""
        session = None if where == "server" else ctx.session_id or f"{ONESHOT_SESSION}{ctx.call_id}"
        if self.network is not None:
            self.network.begin(ctx.tenant_id, ctx.call_id, session)
        summary = None
        try:
            outcome = await self._execute(ctx, where, name, args, on_chunk)
        finally:
            if self.network is not None:
                summary = await asyncio.shield(self.network.end(ctx.tenant_id, ctx.call_id, session))
        return replace(outcome, result=outcome.result.model_copy(update={"network": summary}))

    async def _execute(self, ctx: ToolContext, where: str, name: str, args: dict[str, Any],
                       on_chunk: ChunkCallback | None) -> CallOutcome:
        if where == "server":
            handler = self.registry.get(name).handler
            assert handler is not None
            return CallOutcome(await handler(ctx, args), None, None)
        if ctx.session_id is not None:
            return await self._sandbox.run(ctx.tenant_id, ctx.session_id, name, args,
                                           timeout_s=args.get("timeout_s"), on_chunk=on_chunk, call_id=ctx.call_id)
        # A call outside any session gets a throwaway runner session (its own uid, shell, REPL, private
        # directory), closed after it off the response path: the close kills what it left and frees the uid.
        session = f"{ONESHOT_SESSION}{ctx.call_id}"
        try:
            return await self._sandbox.run(ctx.tenant_id, session, name, args,
                                           timeout_s=args.get("timeout_s"), on_chunk=on_chunk, call_id=ctx.call_id)
        finally:
            task = asyncio.create_task(self._sandbox.close_session(ctx.tenant_id, session))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _record_denial(self, rec: _CallRecord, args: dict[str, Any], code: str, reason: str) -> None:
        await self._started(rec, args, "denied", reason)
        await self._finished(rec, CallOutcome(error_result(rec.tool, code, reason), None, None), "denied")

    async def _started(self, rec: _CallRecord, args: dict[str, Any], decision: str, reason: str | None) -> None:
        await self._audit.started(rec.tenant_id, call_id=rec.call_id, session_id=rec.session_id, tool=rec.tool,
                                  input=args, policy=rec.policy, decision=decision, reason=reason)

    async def _finished(self, rec: _CallRecord, outcome: CallOutcome, decision: str) -> None:
        await self._audit.finished(rec.tenant_id, call_id=rec.call_id, session_id=rec.session_id, tool=rec.tool,
                                   result=outcome.result.model_dump(), oom_killed=outcome.oom_killed,
                                   container_id=outcome.container_id, image_id=outcome.image_id,
                                   policy=rec.policy, decision=decision)
