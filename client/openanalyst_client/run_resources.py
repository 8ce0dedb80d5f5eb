"""Runs for CI and tool-call approvals, blocking (``RunsApi``, ``ApprovalsApi``) and asyncio (``Async…``) side by
side: each pair sends the same requests and returns the same models.

    run = oa.runs.create("run the tests", limits={"max_turns": 10}, webhook={"url": "https://ci/hook"})
    done = oa.runs.wait(run.run_id)          # polls until succeeded / failed / cancelled / timed_out
    oa.approvals.approve(session_id, call_id, reason="reviewed")
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal
from urllib.parse import quote

from openanalyst_client import _requests as rq
from openanalyst_client._async_http import AsyncHttp
from openanalyst_client._sync_http import SyncHttp
from openanalyst_client.run_models import Approval, ApprovalList, DeliveryList, Run, RunCreated, RunList

Decision = Literal["allow", "deny"]


def _run_path(run_id: str, *rest: str) -> str:
    return "/".join(("/v1/runs", quote(run_id, safe=""), *rest))


def _approval_path(session_id: str, call_id: str) -> str:
    return rq.session_path(session_id, "approvals", quote(call_id, safe=""))


def _run_body(message: str, session_id: str | None, environment: str | None, limits: dict[str, Any] | None,
              webhook: dict[str, Any] | None) -> dict[str, Any]:
    return rq.drop_none(message=message, session_id=session_id, environment=environment, limits=limits,
                        webhook=webhook)


class RunsApi:
    """``POST /v1/runs`` and its companions: start an agent job, poll it, cancel it, read its webhook attempts."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def create(self, message: str, *, session_id: str | None = None, environment: str | None = None,
               limits: dict[str, Any] | None = None, webhook: dict[str, Any] | None = None) -> RunCreated:
        """Start a run (answered at once); ``limits``: max_turns, max_seconds, max_cost_usd; ``webhook``: url and
        optional secret (without one the answer's ``webhook_secret`` holds the server's, shown once)."""
        body = _run_body(message, session_id, environment, limits, webhook)
        return RunCreated.model_validate(self._http.json("POST", "/v1/runs", json=body))

    def get(self, run_id: str) -> Run:
        return Run.model_validate(self._http.json("GET", _run_path(run_id)))

    def list(self, *, status: str | None = None, limit: int = 50) -> list[Run]:
        params = rq.drop_none(status=status, limit=limit)
        return RunList.model_validate(self._http.json("GET", "/v1/runs", params=params)).data

    def cancel(self, run_id: str) -> Run:
        return Run.model_validate(self._http.json("POST", _run_path(run_id, "cancel")))

    def deliveries(self, run_id: str) -> DeliveryList:
        return DeliveryList.model_validate(self._http.json("GET", _run_path(run_id, "deliveries")))

    def wait(self, run_id: str, *, max_wait: float = 3600.0, interval: float = 1.0) -> Run:
        """Poll until the run has ended; ``TimeoutError`` after ``max_wait`` seconds."""
        deadline = time.monotonic() + max_wait
        while not (run := self.get(run_id)).finished:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} still {run.status} after {max_wait:g} s")
            time.sleep(interval)
        return run


class ApprovalsApi:
    """Decide the tool calls a session's turn waits on (``approval_required`` events)."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def decide(self, session_id: str, call_id: str, decision: Decision, *, reason: str | None = None) -> Approval:
        body = rq.drop_none(decision=decision, reason=reason)
        return Approval.model_validate(self._http.json("POST", _approval_path(session_id, call_id), json=body))

    def approve(self, session_id: str, call_id: str, *, reason: str | None = None) -> Approval:
        return self.decide(session_id, call_id, "allow", reason=reason)

    def deny(self, session_id: str, call_id: str, *, reason: str | None = None) -> Approval:
        """Refuse the call; the model sees ``reason``."""
        return self.decide(session_id, call_id, "deny", reason=reason)

    def list(self, session_id: str) -> list[Approval]:
        return ApprovalList.model_validate(self._http.json("GET", rq.session_path(session_id, "approvals"))).data


class AsyncRunsApi:
    """``RunsApi`` for ``AsyncClient``."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def create(self, message: str, *, session_id: str | None = None, environment: str | None = None,
                     limits: dict[str, Any] | None = None, webhook: dict[str, Any] | None = None) -> RunCreated:
        body = _run_body(message, session_id, environment, limits, webhook)
        return RunCreated.model_validate(await self._http.json("POST", "/v1/runs", json=body))

    async def get(self, run_id: str) -> Run:
        return Run.model_validate(await self._http.json("GET", _run_path(run_id)))

    async def list(self, *, status: str | None = None, limit: int = 50) -> list[Run]:
        params = rq.drop_none(status=status, limit=limit)
        return RunList.model_validate(await self._http.json("GET", "/v1/runs", params=params)).data

    async def cancel(self, run_id: str) -> Run:
        return Run.model_validate(await self._http.json("POST", _run_path(run_id, "cancel")))

    async def deliveries(self, run_id: str) -> DeliveryList:
        return DeliveryList.model_validate(await self._http.json("GET", _run_path(run_id, "deliveries")))

    async def wait(self, run_id: str, *, max_wait: float = 3600.0, interval: float = 1.0) -> Run:
        deadline = time.monotonic() + max_wait
        while not (run := await self.get(run_id)).finished:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} still {run.status} after {max_wait:g} s")
            await asyncio.sleep(interval)
        return run


class AsyncApprovalsApi:
    """``ApprovalsApi`` for ``AsyncClient``."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def decide(self, session_id: str, call_id: str, decision: Decision, *,
                     reason: str | None = None) -> Approval:
        body = rq.drop_none(decision=decision, reason=reason)
        return Approval.model_validate(await self._http.json("POST", _approval_path(session_id, call_id),
                                                             json=body))

    async def approve(self, session_id: str, call_id: str, *, reason: str | None = None) -> Approval:
        return await self.decide(session_id, call_id, "allow", reason=reason)

    async def deny(self, session_id: str, call_id: str, *, reason: str | None = None) -> Approval:
        return await self.decide(session_id, call_id, "deny", reason=reason)

    async def list(self, session_id: str) -> list[Approval]:
        answer = await self._http.json("GET", rq.session_path(session_id, "approvals"))
        return ApprovalList.model_validate(answer).data
