"""The asyncio client: ``AsyncClient(base_url, api_key=..., tenant=...)``, the same resources as ``Client``
with ``await`` (and ``async for`` over streams).

    async with AsyncClient("http://127.0.0.1:3080", tenant="alice") as oa:
        result = await oa.tools.call("bash", {"command": "ls"})
        async for event in oa.sessions.events(session_id):
            ...
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from openanalyst_client import _requests as rq
from openanalyst_client._async_http import AsyncEventStream, AsyncHttp
from openanalyst_client._policy import ResumeState
from openanalyst_client.admin_resources import (
    AsyncAccountApi,
    AsyncAuditTrustApi,
    AsyncProvidersApi,
    AsyncSandboxApi,
    AsyncSkillsApi,
)
from openanalyst_client.audit_verify import verify_export
from openanalyst_client.config import ClientConfig
from openanalyst_client.models import (
    AuditKey,
    AuditPage,
    ChatAnswer,
    Health,
    Interrupted,
    Me,
    Session,
    SessionDetail,
    SessionPage,
    ToolCallAnswer,
    ToolInfo,
    ToolList,
    Verification,
)
from openanalyst_client.run_resources import AsyncApprovalsApi, AsyncRunsApi
from openanalyst_client.workspace_resources import AsyncEnvironmentsApi, AsyncFilesApi


class _Resource:
    def __init__(self, http: AsyncHttp) -> None:
        self._http = http


class Sessions(_Resource):
    async def create(self, *, title: str | None = None, model: str | None = None, system_prompt: str | None = None,
               metadata: dict[str, Any] | None = None) -> Session:
        body = rq.drop_none(title=title, model=model, system_prompt=system_prompt, metadata=metadata)
        return Session.model_validate(await self._http.json("POST", "/sessions", json=body))

    async def list(self, *, page: int = 1, per_page: int = 20) -> SessionPage:
        return SessionPage.model_validate(await self._http.json("GET", "/sessions",
                                                          params={"page": page, "per_page": per_page}))

    async def get(self, session_id: str) -> SessionDetail:
        return SessionDetail.model_validate(await self._http.json("GET", rq.session_path(session_id)))

    async def delete(self, session_id: str) -> None:
        await self._http.request("DELETE", rq.session_path(session_id))

    async def interrupt(self, session_id: str) -> Interrupted:
        return Interrupted.model_validate(await self._http.json("POST", rq.session_path(session_id, "interrupt")))

    def send(self, session_id: str, message: str) -> AsyncEventStream:
        """Send a message and stream the turn's events up to its final ``state: idle``. A cut connection is
        resumed from the session's event stream with ``Last-Event-ID`` (the turn runs on meanwhile)."""
        def opener(after: int | None) -> contextlib.AbstractAsyncContextManager[httpx.Response]:
            if after is None:
                return self._http.open("POST", rq.session_path(session_id, "message"), json={"message": message},
                                       headers=rq.SSE)
            return self._http.open("GET", rq.session_path(session_id, "events"), headers=rq.resume(after))
        return AsyncEventStream(self._http, opener, ResumeState(turn=True))

    def events(self, session_id: str, *, after: int | None = None) -> AsyncEventStream:
        """The session's events: a ``snapshot``, those after ``after`` (if given), then live ones, for as long
        as you iterate; a cut connection resumes where it stopped, without gaps or duplicates."""
        def opener(start: int | None) -> contextlib.AbstractAsyncContextManager[httpx.Response]:
            return self._http.open("GET", rq.session_path(session_id, "events"), headers=rq.resume(start))
        return AsyncEventStream(self._http, opener, ResumeState(origin=after))


class Tools(_Resource):
    async def list(self) -> list[ToolInfo]:
        return ToolList.model_validate(await self._http.json("GET", "/v1/tools")).data

    async def call(self, name: str, input: dict[str, Any], *, session_id: str | None = None) -> ToolCallAnswer:
        """Run one tool call and return its result (a failed call is a result with ``error`` set; a call the
        server refuses — unknown, invalid, denied — raises)."""
        body = rq.drop_none(input=input, session_id=session_id)
        return ToolCallAnswer.model_validate(await self._http.json("POST", rq.tool_path(name), json=body))

    def stream(self, name: str, input: dict[str, Any], *, session_id: str | None = None) -> AsyncEventStream:
        """``tool_output`` events as the call produces output, then ``tool_result`` (or ``error``)."""
        body = rq.drop_none(input=input, session_id=session_id, stream=True)

        def opener(_: int | None) -> contextlib.AbstractAsyncContextManager[httpx.Response]:
            return self._http.open("POST", rq.tool_path(name), json=body, headers=rq.SSE)
        return AsyncEventStream(self._http, opener)


class Chat(_Resource):
    async def create(self, message: str, **options: Any) -> ChatAnswer:
        """One quick turn without a stored session (``model``, ``effort``, ``system_prompt``,
        ``output_schema``); the answer once the turn is over."""
        body = rq.drop_none(message=message, stream=False, **options)
        return ChatAnswer.model_validate(await self._http.json("POST", "/v1/chat", json=body))

    def stream(self, message: str, **options: Any) -> AsyncEventStream:
        """The quick turn's events as they happen, ending with ``state: idle``."""
        body = rq.drop_none(message=message, stream=True, **options)

        def opener(_: int | None) -> contextlib.AbstractAsyncContextManager[httpx.Response]:
            return self._http.open("POST", "/v1/chat", json=body, headers=rq.SSE)
        return AsyncEventStream(self._http, opener)


class Audit(_Resource):
    async def list(self, *, page: int = 1, per_page: int = 50, **filters: Any) -> AuditPage:
        """One page of the tenant's records (filters: ``session_id``, ``tool``, ``since``, ``until``,
        ``decision``, ``phase``)."""
        params = rq.drop_none(page=page, per_page=per_page, **filters)
        return AuditPage.model_validate(await self._http.json("GET", "/v1/audit", params=params))

    async def export(self, path: str | Path, **filters: Any) -> Path:
        """Stream the export (JSON Lines, signed head last) into ``path``; written whole or not at all."""
        return await self._http.save(path, "audit export", "GET", "/v1/audit/export", params=rq.drop_none(**filters))

    async def key(self) -> AuditKey:
        return AuditKey.model_validate(await self._http.json("GET", "/v1/audit/key"))

    async def verify(self, path: str | Path | None = None, *,
                     key: AuditKey | bytes | str | None = None) -> Verification:
        """Offline: check an export file against the server's public key (fetched when not given). Without a
        path: the server's own check of the stored chain (``GET /v1/audit/verify``)."""
        if path is None:
            return Verification.model_validate(await self._http.json("GET", "/v1/audit/verify"))
        return verify_export(path, key if key is not None else await self.key())


class AsyncClient:
    """The OpenAnalyst server's API. Arguments left out come from ``OPENANALYST_SERVER_URL``,
    ``OPENANALYST_SERVER_API_KEY`` and ``OPENANALYST_TENANT``; see ``ClientConfig`` for the options."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, tenant: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3, max_retry_wait: float = 30.0, max_reconnects: int = 5,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = ClientConfig.resolve(base_url, api_key=api_key, tenant=tenant, timeout=timeout,
                                           max_retries=max_retries, max_retry_wait=max_retry_wait,
                                           max_reconnects=max_reconnects)
        self._http = AsyncHttp(self.config, transport)
        self.sessions = Sessions(self._http)
        self.tools = Tools(self._http)
        self.chat = Chat(self._http)
        self.audit = Audit(self._http)
        self.audit_trust = AsyncAuditTrustApi(self._http)
        self.account = AsyncAccountApi(self._http)
        self.providers = AsyncProvidersApi(self._http)
        self.sandbox = AsyncSandboxApi(self._http)
        self.skills = AsyncSkillsApi(self._http)
        self.files = AsyncFilesApi(self._http)
        self.environments = AsyncEnvironmentsApi(self._http)
        self.runs = AsyncRunsApi(self._http)
        self.approvals = AsyncApprovalsApi(self._http)

    @property
    def retries(self) -> int:
        """How many requests were retried (429/503/connection) since this client was made."""
        return self._http.retries

    async def health(self) -> Health:
        return Health.model_validate(await self._http.json("GET", "/health"))

    async def me(self) -> Me:
        return Me.model_validate(await self._http.json("GET", "/me"))

    async def aclose(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def iter_sessions(self, per_page: int = 100) -> AsyncIterator[Any]:
        """Every session, page after page."""
        page = 1
        while True:
            answer = await self.sessions.list(page=page, per_page=per_page)
            for item in answer.data:
                yield item
            if page >= answer.meta.total_pages:
                return
            page += 1
