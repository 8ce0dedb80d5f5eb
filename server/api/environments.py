"""Environments: a tenant's named images with its own Debian, Python and npm packages (docs/environments.md).

``POST`` answers 202 at once: the build runs in the background, shared with any tenant whose definition has
the same content hash; ``GET .../build/events`` streams its progress and outcome. Deleting a definition keeps
its image (another tenant may use it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Response

from server.api.deps import ServicesDep, TenantDep
from server.api.events import KEEPALIVE, SSEResponse
from server.contract.environments import (
    DefaultBody,
    DefaultEnvironment,
    Environment,
    EnvironmentBody,
    EnvironmentList,
    NamePath,
)
from server.contract.events import EnvironmentBuildDoneEvent, EnvironmentBuildProgressEvent, encode
from server.contract.openapi import COMMON, errors, sse
from server.environments import EnvironmentView
from server.environments.builds import Build

router = APIRouter(tags=["environments"], responses=errors(*COMMON, 503))


def _view(v: EnvironmentView) -> Environment:
    build, d = v.build, v.record.definition
    ready = build is None or build.state == "ready"
    return Environment(name=v.record.name, debian=d["debian"], python=d["python"], npm=d["npm"],
                       dockerfile=d["dockerfile"], state=build.state if build is not None else "ready",
                       image=(build.built.tag if build is not None and build.built is not None else None)
                       if ready else None,
                       hash=build.hash if build is not None else None,
                       error=build.message if build is not None else None,
                       error_code=build.code if build is not None else None,
                       default=v.is_default, created_at=v.record.created_at)


@router.post("/v1/environments", status_code=202, responses=errors(409, 429))
async def create_environment(body: EnvironmentBody, tenant: TenantDep, services: ServicesDep) -> Environment:
    """Store the definition and start its build (or find it built): `state` says which."""
    raw = body.model_dump(exclude={"name"})
    return _view(await services.environments.create(tenant.id, body.name, raw))


@router.get("/v1/environments")
async def list_environments(tenant: TenantDep, services: ServicesDep) -> EnvironmentList:
    return EnvironmentList(data=[_view(v) for v in await services.environments.list(tenant.id)])


@router.get("/v1/environments/default")
async def get_default(tenant: TenantDep, services: ServicesDep) -> DefaultEnvironment:
    """The environment a call runs in when its session names none (null: the sandbox image)."""
    return DefaultEnvironment(environment=await services.environments.store.get_default(tenant.id))


@router.put("/v1/environments/default", responses=errors(404))
async def put_default(body: DefaultBody, tenant: TenantDep, services: ServicesDep) -> DefaultEnvironment:
    await services.environments.set_default(tenant.id, body.environment)
    return DefaultEnvironment(environment=body.environment)


@router.get("/v1/environments/{name}", responses=errors(404))
async def get_environment(name: NamePath, tenant: TenantDep, services: ServicesDep) -> Environment:
    return _view(await services.environments.view(tenant.id, name))


@router.delete("/v1/environments/{name}", status_code=204, responses=errors(404))
async def delete_environment(name: NamePath, tenant: TenantDep, services: ServicesDep) -> Response:
    await services.environments.delete(tenant.id, name)
    return Response(status_code=204)


async def _build_events(name: str, build: Build | None, keepalive_s: float) -> AsyncIterator[bytes]:
    if build is not None:
        async for item in build.follow(keepalive_s):
            yield KEEPALIVE if item is None else encode(
                EnvironmentBuildProgressEvent(environment=name, line=item[1]), item[0])
    failed = build is not None and build.state == "failed"
    yield encode(EnvironmentBuildDoneEvent(
        environment=name, state="failed" if failed else "ready",
        image=build.built.tag if build is not None and build.built is not None else None,
        code=build.code if build is not None else None, message=build.message if build is not None else None))


@router.get("/v1/environments/{name}/build/events", response_model=None, responses={
    200: sse("EnvironmentBuildEvent", "Every progress line kept so far, then live ones, then "
                                      "`environment_build_done`."), **errors(404)})
async def build_events(name: NamePath, tenant: TenantDep, services: ServicesDep) -> SSEResponse:
    view = await services.environments.view(tenant.id, name)
    return SSEResponse(_build_events(name, view.build, services.settings.sse_keepalive_s))
