"""Shared route dependencies as typed ``Annotated`` aliases, declared once.

``get_services`` (``server.app_services``) is the one reader of ``app.state``; every accessor here narrows the wired
``Services`` to the part a route needs, so a route (and a test's ``dependency_overrides``) names exactly that.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, TypeVar

from fastapi import Depends

from server.app_services import get_services
from server.approvals.gate import ApprovalGate
from server.audit.log import AuditLog
from server.environments.service import EnvironmentService
from server.files.service import FilesService
from server.observability.metrics import Metrics
from server.providers.failover import ProviderRouter
from server.runs.service import RunService
from server.services import Services
from server.sessions.agent import AgentLoop
from server.settings import Settings
from server.skills.catalog import SkillCatalog
from server.tenancy import Tenant, TenantDep
from server.tools.context import ToolContext
from server.tools.dispatch import ToolDispatcher
from server.tools.sandbox_backend import SandboxBackend

__all__ = ["AgentDep", "ApprovalsDep", "AuditDep", "DispatcherDep", "EnvironmentsDep", "FilesDep", "MetricsDep",
           "RouterDep", "RunsDep", "SandboxDep", "ServicesDep", "SessionContextDep", "SettingsDep", "SkillsDep",
           "Tenant", "TenantDep", "get_services"]


ServicesDep = Annotated[Services, Depends(get_services)]
T = TypeVar("T")


def _part(pick: Callable[[Services], T]) -> Callable[[Services], Coroutine[None, None, T]]:
    """A dependency giving the one part ``pick`` takes from the services (typed by what it returns); ``async``
    so that FastAPI calls it on the event loop, not in its thread pool (``server.app_services``)."""

    async def dependency(services: ServicesDep) -> T:
        return pick(services)

    return dependency


SettingsDep = Annotated[Settings, Depends(_part(lambda s: s.settings))]
MetricsDep = Annotated[Metrics, Depends(_part(lambda s: s.metrics))]
AuditDep = Annotated[AuditLog, Depends(_part(lambda s: s.audit))]
RouterDep = Annotated[ProviderRouter, Depends(_part(lambda s: s.router))]
SandboxDep = Annotated[SandboxBackend, Depends(_part(lambda s: s.sandbox_backend))]
DispatcherDep = Annotated[ToolDispatcher, Depends(_part(lambda s: s.dispatcher))]
AgentDep = Annotated[AgentLoop, Depends(_part(lambda s: s.agent))]
SessionContextDep = Annotated[Callable[[str, str], ToolContext], Depends(_part(lambda s: s.session_context))]
SkillsDep = Annotated[SkillCatalog, Depends(_part(lambda s: s.skills))]
FilesDep = Annotated[FilesService, Depends(_part(lambda s: s.files))]
ApprovalsDep = Annotated[ApprovalGate, Depends(_part(lambda s: s.approvals))]
RunsDep = Annotated[RunService, Depends(_part(lambda s: s.runs))]
EnvironmentsDep = Annotated[EnvironmentService, Depends(_part(lambda s: s.environments))]
