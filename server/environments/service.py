"""Environments for the API and the sandbox: definitions per tenant, builds in the background, and the image
a tool call runs in (docs/environments.md).

The base of every environment is the sandbox image the server runs now, known once the sandbox is up; its
engine id is part of the content hash, so a new runner (a new base) means a rebuild on the next use. A call
whose environment is not ready is refused before anything runs: ``ENVIRONMENT_BUILDING`` (409, retry) or
``ENVIRONMENT_BUILD_FAILED`` (409, the build's error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from server.environments.builds import Build, BuildLimit, Builds
from server.environments.store import EnvironmentRecord, EnvironmentStore, not_found
from server.errors import ApiError, Conflict, NotFound, TooManyRequests, Unprocessable
from toolrunner.envbuild import Definition, EnvironmentBuilder, EnvironmentInvalid, definition, validate_name
from toolrunner.errors import SandboxError

# A direct tool call may name its environment (``POST /v1/tools/{name}`` field ``environment``): the route sets
# this for the request's task, and the dispatcher's call into the sandbox, made in that task or one it starts,
# sees it without every layer between passing it on.
CALL_ENVIRONMENT: ContextVar[str | None] = ContextVar("openanalyst_call_environment", default=None)
SESSION_READ: ContextVar[tuple[str, str, str | None] | None] = ContextVar("openanalyst_session_read", default=None)
"""(tenant, session id, the session's environment) as the request already read it (``POST /v1/tools/{name}``), so
the call's image lookup does not read the session again (a round trip per call on PostgreSQL)."""
BaseImage = Callable[[], Awaitable[str]]  # the sandbox image's tag, once the sandbox is up
SessionEnvironment = Callable[[str, str], Awaitable[str | None]]  # (tenant, session) -> the session's environment name
RESERVED_NAMES = frozenset({"default"})


@dataclass(frozen=True)
class EnvironmentView:
    """A definition with the state of its build on the current base."""

    record: EnvironmentRecord
    build: Build | None
    is_default: bool


def parse(raw: dict[str, Any]) -> Definition:
    """A definition from request fields; ``ENVIRONMENT_INVALID`` (422) with the rule broken."""
    try:
        return definition(debian=raw.get("debian") or [], python=raw.get("python") or [],
                          npm=raw.get("npm") or [], dockerfile=raw.get("dockerfile") or "")
    except EnvironmentInvalid as exc:
        raise Unprocessable(exc.code, exc.message) from None


def check_name(name: str) -> str:
    try:
        validate_name(name)
    except EnvironmentInvalid as exc:
        raise Unprocessable(exc.code, exc.message) from None
    if name in RESERVED_NAMES:
        raise Conflict("ENVIRONMENT_NAME_RESERVED", f"{name!r} is reserved (the path of the tenant's default)")
    return name


class EnvironmentService:
    def __init__(self, store: EnvironmentStore, builder: Callable[[], EnvironmentBuilder], base_image: BaseImage,
                 session_environment: SessionEnvironment, *, max_per_tenant: int = 50,
                 max_builds_per_tenant: int = 2) -> None:
        self.store = store
        self._builder_factory = builder
        self._builder: EnvironmentBuilder | None = None
        self._base_image = base_image
        self._session_environment = session_environment
        self._max = max_per_tenant
        self._max_builds = max_builds_per_tenant
        self.builds = Builds()
        self._hashes: dict[tuple[str, str], str] = {}  # (definition JSON, base) -> content hash

    def builder(self) -> EnvironmentBuilder:
        if self._builder is None:
            self._builder = self._builder_factory()
        return self._builder

    async def _digest(self, defn: Definition, base: str) -> str:
        key = (repr(defn.as_json()), base)
        if key not in self._hashes:
            try:
                self._hashes[key] = await asyncio.to_thread(self.builder().key, defn, base)
            except SandboxError as exc:
                raise ApiError(exc.code, exc.message, status=exc.status) from None
        return self._hashes[key]

    async def _build(self, record: EnvironmentRecord, *, retry_failed: bool = False,
                     capped: bool = False) -> Build | None:
        """The build of the record's definition on the current base, started if none ran (None: empty);
        ``capped``: a new build counts against the tenant's builds in progress (``BuildLimit``)."""
        defn = parse(record.definition)
        if defn.empty:
            return None
        base = await self._base_image()
        digest = await self._digest(defn, base)
        builder = self.builder()
        return self.builds.start(digest, lambda progress: builder.ensure(defn, base, progress),
                                 retry_failed=retry_failed, owner=record.tenant_id,
                                 max_per_owner=self._max_builds if capped else None)

    async def create(self, tenant_id: str, name: str, raw: dict[str, Any]) -> EnvironmentView:
        defn = parse(raw)
        record = await self.store.create(tenant_id, check_name(name), defn.as_json(), self._max)
        try:
            build = await self._build(record, retry_failed=True, capped=True)
        except BuildLimit as exc:
            await self.store.delete(tenant_id, record.name)  # refused whole: nothing of it is kept
            raise TooManyRequests("ENVIRONMENT_BUILDS_BUSY", str(exc), retry_after_s=30) from None
        return EnvironmentView(record, build, False)

    async def view(self, tenant_id: str, name: str) -> EnvironmentView:
        record = await self.store.get(tenant_id, name)
        return EnvironmentView(record, await self._build(record), await self.store.get_default(tenant_id) == name)

    async def list(self, tenant_id: str) -> list[EnvironmentView]:
        default = await self.store.get_default(tenant_id)
        return [EnvironmentView(r, await self._build(r), r.name == default) for r in await self.store.list(tenant_id)]

    async def delete(self, tenant_id: str, name: str) -> None:
        """The definition goes; its image stays (it may serve another tenant's identical definition)."""
        await self.store.delete(tenant_id, name)

    async def set_default(self, tenant_id: str, name: str | None) -> None:
        await self.store.set_default(tenant_id, name)

    async def check_exists(self, tenant_id: str, name: str) -> None:
        """404 ``ENVIRONMENT_NOT_FOUND`` unless the tenant has this environment (a session naming it)."""
        await self.store.get(tenant_id, name)

    async def _environment_of(self, tenant_id: str, session_id: str) -> str | None:
        read = SESSION_READ.get()
        if read is not None and read[:2] == (tenant_id, session_id):
            return read[2]
        return await self._session_environment(tenant_id, session_id)

    async def image_for(self, tenant_id: str, session_id: str | None) -> str | None:
        """The image a call runs in: the one the call names, else its session's environment, else the tenant's
        default, else the sandbox image (None). Refused before the call runs when that environment is gone,
        building or failed."""
        name = CALL_ENVIRONMENT.get()
        name = name or (await self._environment_of(tenant_id, session_id) if session_id else None)
        name = name or await self.store.get_default(tenant_id)
        if name is None:
            return None
        try:
            record = await self.store.get(tenant_id, name)
        except NotFound:
            raise not_found(name) from None
        build = await self._build(record)
        if build is None:
            return None
        if build.state == "building":
            raise Conflict("ENVIRONMENT_BUILDING", f"environment {name!r} is still building; follow "
                           f"GET /v1/environments/{name}/build/events and retry")
        if build.state == "failed" or build.built is None:
            raise Conflict("ENVIRONMENT_BUILD_FAILED", f"environment {name!r} failed to build: {build.message}")
        return build.built.tag

    async def close(self) -> None:
        await self.builds.close()
        if self._builder is not None:
            self._builder.client.close()
