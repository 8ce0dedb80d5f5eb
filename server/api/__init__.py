"""HTTP routes, one module per resource group; ``ROUTERS`` is what ``create_app`` includes.

The integrator appends the chat, tools, sandbox and audit routers here.
"""

from __future__ import annotations

from fastapi import APIRouter

from server.api import (
    account,
    approvals,
    audit,
    chat,
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

ROUTERS: list[APIRouter] = [health.router, me.router, account.router, providers.router, sessions.router, events.router,
                            turns.router, chat.router, tools.router, sandbox.router, audit.router,
                            provider_status.router, viewer.router, files.router,
                            approvals.router, runs.router]
