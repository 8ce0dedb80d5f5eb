"""The dispatcher's audit sink, measured: every tool call passes through ``started`` and ``finished`` (denied
and refused ones too), so wrapping the sink counts each call by tool and outcome and times it, and times each
record's way through the audit writer (the writer's lag as callers feel it) without touching the dispatcher.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from server.observability.metrics import Metrics
from server.tools.dispatch import AuditSink

MAX_OPEN_CALLS = 100_000  # a bound on the start times kept, should a finished record never come


class MeteredAudit:
    def __init__(self, inner: AuditSink, metrics: Metrics, known_tool: Callable[[str], bool]) -> None:
        self._inner = inner
        self._metrics = metrics
        self._known = known_tool
        self._started: dict[tuple[str, str], float] = {}

    async def _timed(self, write: Any) -> int:
        m = self._metrics
        m.audit_pending.inc()
        began = time.perf_counter()
        try:
            seq: int = await write
            return seq
        finally:
            m.audit_pending.dec()
            m.audit_write.observe(time.perf_counter() - began)

    async def started(self, tenant_id: str, *, call_id: str, session_id: str | None, tool: str,
                      input: dict[str, Any], policy: str, decision: str, reason: str | None = None) -> int:
        if len(self._started) < MAX_OPEN_CALLS:
            self._started[(tenant_id, call_id)] = time.perf_counter()
        return await self._timed(self._inner.started(
            tenant_id, call_id=call_id, session_id=session_id, tool=tool, input=input, policy=policy,
            decision=decision, reason=reason))

    async def finished(self, tenant_id: str, *, call_id: str, session_id: str | None, tool: str,
                       result: dict[str, Any], oom_killed: bool, container_id: str | None,
                       image_id: str | None, policy: str, decision: str) -> int:
        began = self._started.pop((tenant_id, call_id), None)
        try:
            return await self._timed(self._inner.finished(
                tenant_id, call_id=call_id, session_id=session_id, tool=tool, result=result,
                oom_killed=oom_killed, container_id=container_id, image_id=image_id, policy=policy,
                decision=decision))
        finally:
            outcome = "denied" if decision != "allowed" else "error" if result.get("error") else "ok"
            name = tool if self._known(tool) else "unknown"
            self._metrics.tool_calls.labels(name, outcome).inc()
            if began is not None:
                self._metrics.tool_duration.labels(name, outcome).observe(time.perf_counter() - began)
