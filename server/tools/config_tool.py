"""The ``config`` tool: the agent reads its turn's settings and the limits its tenant's policy sets, and
changes the settings the tenant may choose itself — never a limit.

Writable: ``model`` (checked against the tenant's providers first, so a bad name fails this call, not the
next model call), ``effort``, ``max_output_tokens`` (up to the server's ``max_output_tokens``, never past it).
Read-only: every field of the policy (timeouts, output cap, network, tool lists, resources) and the running
skill's tool scope. A change applies from the next model call of this turn on (the agent loop reads its
``TurnOptions`` again each time) and to sub-agents started after it; it is not stored in the session, whose
model is the client's choice. A direct tool call (no turn) can read, not write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, get_args

from pydantic import Field

from policies.model import Policy
from server.errors import ApiError
from server.providers.failover import ProviderRouter
from server.providers.types import Effort
from server.tools.builtin import _fail, _ok
from server.tools.context import ToolContext, TurnSettings
from server.tools.registry import ToolDef
from server.tools.specs import ToolInput
from toolrunner.results import ToolResult

ModelCheck = Callable[[str, str], Awaitable[None]]  # (tenant_id, model): raises ApiError if not served

WRITABLE = ("model", "effort", "max_output_tokens")
READ_ONLY = ("policy", "network", "default_timeout_s", "max_timeout_s", "output_cap_bytes",
             "max_concurrent_calls", "allowed_tools", "denied_tools", "cpus", "memory_mb", "pids", "disk_mb",
             "skill_allowed_tools")
SETTINGS = WRITABLE + READ_ONLY

DESCRIPTION = ("Read this turn's settings and the sandbox limits (omit 'setting' to list them all), or change "
               "model, effort or max_output_tokens for the rest of this turn. Limits are read-only.")


class ConfigInput(ToolInput):
    setting: str | None = Field(default=None, min_length=1, max_length=64,
                                description="One of: " + ", ".join(SETTINGS) + ". Omit to list all.")
    value: str | int | None = Field(default=None, description="The new value (omit to read). null resets "
                                                              "model or effort to the server's default.")


class ConfigTool:
    """The handler; ``max_output_tokens`` is the server's ceiling, ``check_model`` the router's test."""

    def __init__(self, policy_for: Callable[[str], Policy], check_model: ModelCheck, max_output_tokens: int) -> None:
        self._policy_for = policy_for
        self._check_model = check_model
        self._ceiling = max_output_tokens

    def definition(self) -> ToolDef:
        return ToolDef("config", DESCRIPTION, ConfigInput, "server", self.run)

    def current(self, ctx: ToolContext) -> dict[str, Any]:
        policy = self._policy_for(ctx.tenant_id)
        turn = ctx.turn
        return {
            "model": turn.model if turn else None,
            "effort": turn.effort if turn else None,
            "max_output_tokens": (turn.max_tokens if turn and turn.max_tokens else self._ceiling),
            "policy": policy.name, "network": policy.network,
            "default_timeout_s": policy.default_timeout_s, "max_timeout_s": policy.max_timeout_s,
            "output_cap_bytes": policy.output_cap_bytes, "max_concurrent_calls": policy.max_concurrent_calls,
            "allowed_tools": list(policy.allowed_tools) if policy.allowed_tools is not None else None,
            "denied_tools": list(policy.denied_tools), "cpus": policy.cpus, "memory_mb": policy.memory_mb,
            "pids": policy.pids, "disk_mb": policy.disk_mb,
            "skill_allowed_tools": sorted(ctx.skill_scope) if ctx.skill_scope is not None else None,
        }

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        started = time.perf_counter()
        setting = args.get("setting")
        if setting is None:
            if "value" in args:
                return _fail("config", "INVALID_INPUT", "give 'setting' with 'value'", started)
            return _ok("config", json.dumps(self.current(ctx)), started)
        if setting not in SETTINGS:
            return _fail("config", "UNKNOWN_SETTING", f"no setting {setting!r}; one of: {', '.join(SETTINGS)}",
                         started)
        if "value" not in args:
            return _ok("config", json.dumps({setting: self.current(ctx)[setting]}), started)
        if setting in READ_ONLY:
            return _fail("config", "CONFIG_READ_ONLY", f"{setting!r} is set by the server or the tenant's policy "
                                                       "and cannot be changed from a turn", started)
        if ctx.turn is None:
            return _fail("config", "CONFIG_NO_TURN", "there is no running turn to configure (a direct tool "
                                                     "call can read settings, not change them)", started)
        try:
            changed = await self._set(ctx, ctx.turn, setting, args["value"])
        except ApiError as exc:
            return _fail("config", exc.code, exc.message, started)
        return _ok("config", json.dumps({setting: changed, "applies": "from the next model call of this turn"}),
                   started)

    async def _set(self, ctx: ToolContext, turn: TurnSettings, setting: str, value: Any) -> Any:
        """Apply one writable setting after checking it; raises ApiError naming what is wrong."""
        if setting == "model":
            if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 200):
                raise ApiError("INVALID_INPUT", "model must be a model name (1-200 characters) or null")
            if value is not None:
                await self._check_model(ctx.tenant_id, value)
            turn.model = value
            return value
        if setting == "effort":
            if value is not None and value not in get_args(Effort):
                raise ApiError("INVALID_INPUT", f"effort must be one of {', '.join(get_args(Effort))} or null")
            turn.effort = value
            return value
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= self._ceiling:
            raise ApiError("LIMIT_NOT_RAISABLE" if isinstance(value, int) and value > self._ceiling
                           else "INVALID_INPUT",
                           f"max_output_tokens must be an integer from 1 to {self._ceiling} (the server's limit)")
        turn.max_tokens = value
        return value


def router_check(router: ProviderRouter) -> ModelCheck:
    """The router's own test: some provider the tenant configured serves ``model`` (substitution setting
    included); else ``MODEL_NOT_AVAILABLE`` naming the providers, as the next model call would fail."""

    async def check(tenant_id: str, model: str) -> None:
        router.plan(model, await router.credentials(tenant_id))

    return check
