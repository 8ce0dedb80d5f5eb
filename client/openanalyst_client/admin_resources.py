"""The account, provider, sandbox, skills and audit-trust routes, blocking (``Account``…) and asyncio
(``AsyncAccount``…) side by side: each pair sends the same requests and returns the same models, so the two
cannot drift apart unnoticed."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from openanalyst_client import _requests as rq
from openanalyst_client._async_http import AsyncEventStream, AsyncHttp
from openanalyst_client._sync_http import EventStream, SyncHttp
from openanalyst_client.admin_models import (
    Account,
    AuthStatus,
    CheckpointPage,
    InclusionProof,
    OtpChallenge,
    ProviderEntry,
    ProviderList,
    ProviderStatusList,
    SandboxInfo,
    SkillList,
    SkillMatches,
    SkillRunAnswer,
)


def _provider_path(name: str) -> str:
    return "/me/providers/" + quote(name, safe="")


def _skill_run_path(name: str) -> str:
    return "/v1/skills/" + quote(name, safe="") + "/run"


def _execute_body(query: str | None, names: Sequence[str] | None, options: dict[str, Any]) -> dict[str, Any]:
    if (query is None) == (names is None):
        raise ValueError("give exactly one of query and names")
    return rq.drop_none(query=query, names=None if names is None else [*names], **options)


class AccountApi:
    """The hosted OpenAnalyst account: e-mail one-time-code sign-in, its state, sign-out (``/me/auth/*``)."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def start_sign_in(self, email: str) -> OtpChallenge:
        return OtpChallenge.model_validate(self._http.json("POST", "/me/auth/otp/start", json={"email": email}))

    def verify(self, email: str, code: str, challenge_id: str) -> AuthStatus:
        body = {"email": email, "code": code, "challenge_id": challenge_id}
        return AuthStatus.model_validate(self._http.json("POST", "/me/auth/otp/verify", json=body))

    def status(self) -> AuthStatus:
        return AuthStatus.model_validate(self._http.json("GET", "/me/auth/status"))

    def sign_out(self) -> None:
        self._http.request("POST", "/me/auth/logout")

    def prefer(self, source: str) -> None:
        """Which credential the ``openanalyst`` provider uses: ``"oauth"`` (the sign-in) or ``"manual"``."""
        self._http.request("PUT", "/me/providers/openanalyst/preferred-source", json={"source": source})

    def get(self) -> Account:
        return Account.model_validate(self._http.json("GET", "/api/ai/account"))


class ProvidersApi:
    """The tenant's provider credentials (masked when read) and the state of each provider's breaker."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def list(self) -> ProviderList:
        return ProviderList.model_validate(self._http.json("GET", "/me/providers"))

    def set(self, name: str, *, api_key: str | None = None, base_url: str | None = None) -> ProviderEntry:
        body = rq.drop_none(api_key=api_key, base_url=base_url)
        return ProviderEntry.model_validate(self._http.json("PUT", _provider_path(name), json=body))

    def delete(self, name: str) -> None:
        self._http.request("DELETE", _provider_path(name))

    def status(self) -> ProviderStatusList:
        return ProviderStatusList.model_validate(self._http.json("GET", "/v1/providers/status"))


class SandboxApi:
    """The tenant's sandbox container: its state, limits and usage; ``reset`` removes it (the next call starts
    a fresh one; the workspace stays)."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def get(self) -> SandboxInfo:
        return SandboxInfo.model_validate(self._http.json("GET", "/v1/sandbox"))

    def reset(self) -> None:
        self._http.request("DELETE", "/v1/sandbox")


class SkillsApi:
    """Skills the tenant sees (the server's and its own), ranked matches, and runs through the agent loop."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def list(self) -> SkillList:
        return SkillList.model_validate(self._http.json("GET", "/v1/skills"))

    def match(self, query: str, *, limit: int | None = None) -> SkillMatches:
        body = rq.drop_none(query=query, limit=limit)
        return SkillMatches.model_validate(self._http.json("POST", "/v1/skills/match", json=body))

    def execute(self, *, query: str | None = None, names: Sequence[str] | None = None,
                **options: Any) -> SkillRunAnswer:
        """Run the best matches of ``query`` (or the skills ``names``) and return the answer once the turn is
        over; ``message``, ``limit``, ``model``, ``effort``, ``system_prompt`` as the server documents."""
        body = _execute_body(query, names, options) | {"stream": False}
        return SkillRunAnswer.model_validate(self._http.json("POST", "/v1/skills/execute", json=body))

    def execute_stream(self, *, query: str | None = None, names: Sequence[str] | None = None,
                       **options: Any) -> EventStream:
        body = _execute_body(query, names, options) | {"stream": True}
        return self._stream("/v1/skills/execute", body)

    def run(self, name: str, input: str | None = None, **options: Any) -> SkillRunAnswer:
        body = rq.drop_none(input=input, **options) | {"stream": False}
        return SkillRunAnswer.model_validate(self._http.json("POST", _skill_run_path(name), json=body))

    def run_stream(self, name: str, input: str | None = None, **options: Any) -> EventStream:
        return self._stream(_skill_run_path(name), rq.drop_none(input=input, **options) | {"stream": True})

    def _stream(self, path: str, body: dict[str, Any]) -> EventStream:
        def opener(_: int | None) -> contextlib.AbstractContextManager[httpx.Response]:
            return self._http.open("POST", path, json=body, headers=rq.SSE)
        return EventStream(self._http, opener)


class AuditTrustApi:
    """What lets a reader trust an audit export without trusting the server: signed checkpoints of the
    tenant's Merkle tree and inclusion proofs of single records."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def checkpoints(self, *, page: int = 1, per_page: int = 50) -> CheckpointPage:
        params = {"page": page, "per_page": per_page}
        return CheckpointPage.model_validate(self._http.json("GET", "/v1/audit/checkpoints", params=params))

    def latest_note(self) -> str:
        """The newest checkpoint as a C2SP signed note (text), as witnesses read it."""
        response = self._http.request("GET", "/v1/audit/checkpoints/latest", params={"format": "note"})
        return response.text

    def proof(self, seq: int, *, tree_size: int | None = None) -> InclusionProof:
        params = rq.drop_none(seq=seq, tree_size=tree_size)
        return InclusionProof.model_validate(self._http.json("GET", "/v1/audit/proof", params=params))


class AsyncAccountApi:
    """``AccountApi`` for ``AsyncClient``."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def start_sign_in(self, email: str) -> OtpChallenge:
        return OtpChallenge.model_validate(await self._http.json("POST", "/me/auth/otp/start",
                                                                 json={"email": email}))

    async def verify(self, email: str, code: str, challenge_id: str) -> AuthStatus:
        body = {"email": email, "code": code, "challenge_id": challenge_id}
        return AuthStatus.model_validate(await self._http.json("POST", "/me/auth/otp/verify", json=body))

    async def status(self) -> AuthStatus:
        return AuthStatus.model_validate(await self._http.json("GET", "/me/auth/status"))

    async def sign_out(self) -> None:
        await self._http.request("POST", "/me/auth/logout")

    async def prefer(self, source: str) -> None:
        await self._http.request("PUT", "/me/providers/openanalyst/preferred-source", json={"source": source})

    async def get(self) -> Account:
        return Account.model_validate(await self._http.json("GET", "/api/ai/account"))


class AsyncProvidersApi:
    """``ProvidersApi`` for ``AsyncClient``."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def list(self) -> ProviderList:
        return ProviderList.model_validate(await self._http.json("GET", "/me/providers"))

    async def set(self, name: str, *, api_key: str | None = None, base_url: str | None = None) -> ProviderEntry:
        body = rq.drop_none(api_key=api_key, base_url=base_url)
        return ProviderEntry.model_validate(await self._http.json("PUT", _provider_path(name), json=body))

    async def delete(self, name: str) -> None:
        await self._http.request("DELETE", _provider_path(name))

    async def status(self) -> ProviderStatusList:
        return ProviderStatusList.model_validate(await self._http.json("GET", "/v1/providers/status"))


class AsyncSandboxApi:
    """``SandboxApi`` for ``AsyncClient``."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def get(self) -> SandboxInfo:
        return SandboxInfo.model_validate(await self._http.json("GET", "/v1/sandbox"))

    async def reset(self) -> None:
        await self._http.request("DELETE", "/v1/sandbox")


class AsyncSkillsApi:
    """``SkillsApi`` for ``AsyncClient``."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def list(self) -> SkillList:
        return SkillList.model_validate(await self._http.json("GET", "/v1/skills"))

    async def match(self, query: str, *, limit: int | None = None) -> SkillMatches:
        body = rq.drop_none(query=query, limit=limit)
        return SkillMatches.model_validate(await self._http.json("POST", "/v1/skills/match", json=body))

    async def execute(self, *, query: str | None = None, names: Sequence[str] | None = None,
                      **options: Any) -> SkillRunAnswer:
        body = _execute_body(query, names, options) | {"stream": False}
        return SkillRunAnswer.model_validate(await self._http.json("POST", "/v1/skills/execute", json=body))

    def execute_stream(self, *, query: str | None = None, names: Sequence[str] | None = None,
                       **options: Any) -> AsyncEventStream:
        body = _execute_body(query, names, options) | {"stream": True}
        return self._stream("/v1/skills/execute", body)

    async def run(self, name: str, input: str | None = None, **options: Any) -> SkillRunAnswer:
        body = rq.drop_none(input=input, **options) | {"stream": False}
        return SkillRunAnswer.model_validate(await self._http.json("POST", _skill_run_path(name), json=body))

    def run_stream(self, name: str, input: str | None = None, **options: Any) -> AsyncEventStream:
        return self._stream(_skill_run_path(name), rq.drop_none(input=input, **options) | {"stream": True})

    def _stream(self, path: str, body: dict[str, Any]) -> AsyncEventStream:
        def opener(_: int | None) -> contextlib.AbstractAsyncContextManager[httpx.Response]:
            return self._http.open("POST", path, json=body, headers=rq.SSE)
        return AsyncEventStream(self._http, opener)


class AsyncAuditTrustApi:
    """``AuditTrustApi`` for ``AsyncClient``."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def checkpoints(self, *, page: int = 1, per_page: int = 50) -> CheckpointPage:
        params = {"page": page, "per_page": per_page}
        return CheckpointPage.model_validate(await self._http.json("GET", "/v1/audit/checkpoints", params=params))

    async def latest_note(self) -> str:
        response = await self._http.request("GET", "/v1/audit/checkpoints/latest", params={"format": "note"})
        return response.text

    async def proof(self, seq: int, *, tree_size: int | None = None) -> InclusionProof:
        params = rq.drop_none(seq=seq, tree_size=tree_size)
        return InclusionProof.model_validate(await self._http.json("GET", "/v1/audit/proof", params=params))
