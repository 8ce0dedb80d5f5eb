"""HTTP routes, one module per resource group; ``ROUTERS`` is what ``build_app`` includes.

The integrator appends the chat, tools, sandbox and audit routers here.
"""

from __future__ import annotations

from fastapi import APIRouter

from server.api import (
    account,
    approvals,
    audit,
    chat,
    environments,
    events,
    files,
    health,
    me,
    provider_status,
    providers,
    runs,
    sandbox,
    sessions,
    tools,
    turns,
    viewer,
)

# The tools router first: FastAPI tries the included routers in order (about 8 us each, bench/routing.py), and
# POST /v1/tools/{name} is the hot path (docs/speed.md, "HTTP path"); no other router has a path under /v1/tools.
ROUTERS: list[APIRouter] = [tools.router, health.router, me.router, account.router, providers.router,
                            sessions.router, events.router, turns.router, chat.router, sandbox.router, audit.router,
                            provider_status.router, viewer.router, files.router,
                            approvals.router, runs.router, environments.router]
