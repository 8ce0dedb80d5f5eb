"""Every route's endpoint and dependencies run on the event loop: FastAPI runs a plain ``def`` in its worker-thread
pool, a thread hop per request and a queue of 40 threads under load (docs/speed.md, "HTTP path")."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from server.api import ROUTERS, metrics, openai_compat, skills


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _runs_in_thread(call: Callable[..., Any]) -> bool:
    """What FastAPI would hand to its thread pool (``fastapi.dependencies.models.Dependant.is_coroutine_callable``)."""
    if inspect.isclass(call):
        return False  # security schemes and the like: called with __call__, checked below
    target = call if inspect.isroutine(call) else getattr(call, "__call__", call)  # noqa: B004
    return not (inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target))


def test_no_route_hops_to_a_worker_thread() -> None:
    routers = (*ROUTERS, openai_compat.router, metrics.router, skills.router)  # what server.app.build_app includes
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    assert any(r.path == "/v1/tools/{name}" for r in routes)
    sync = sorted({f"{r.path}: {getattr(c, '__qualname__', c)}" for r in routes for c in _calls(r.dependant)
                   if _runs_in_thread(c)})
    assert sync == []
