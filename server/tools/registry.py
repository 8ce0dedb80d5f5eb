"""The catalogue of tools: sandbox tools (run by the runner in the tenant's container) and server tools.

One registry serves `GET /v1/tools`, the tool list sent to providers, input validation and `tool_search`, so
they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from server.errors import NotFound, Unprocessable
from server.tools.specs import SANDBOX_TOOLS, schema_of

if TYPE_CHECKING:
    from server.tools.context import ToolContext
    from toolrunner.results import ToolResult

ServerHandler = Callable[["ToolContext", dict[str, Any]], Awaitable["ToolResult"]]
# Why a tool cannot run for this tenant now (the image lacks its program, no backend is configured, its policy
# gives it no way out), or None.
Probe = Callable[[str], str | None]


@dataclass(frozen=True)
class ToolDef:
    name: str
    description: str
    input_model: type[BaseModel] | None
    where: Literal["sandbox", "server"]
    handler: ServerHandler | None = None
    schema_override: dict[str, Any] | None = field(default=None, compare=False)
    probe: Probe | None = field(default=None, compare=False)

    @property
    def input_schema(self) -> dict[str, Any]:
        if self.schema_override is not None:
            return self.schema_override
        assert self.input_model is not None
        return schema_of(self.input_model)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "where": self.where,
                "input_schema": self.input_schema}


def out_of_scope(name: str, scope: frozenset[str] | None) -> tuple[str, str] | None:
    """``(code, reason)`` when a skill run's ``allowed-tools`` (``scope``) do not name the tool."""
    if scope is None or name in scope:
        return None
    return "TOOL_NOT_ALLOWED_BY_SKILL", f"the running skill's allowed-tools do not name {name!r}"


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


class ToolRegistry:
    def __init__(self, tools: Iterable[ToolDef]) -> None:
        self._tools = {t.name: t for t in tools}

    @classmethod
    def with_sandbox_tools(cls, extra: Iterable[ToolDef] = ()) -> ToolRegistry:
        sandbox = [ToolDef(name, desc, model, "sandbox") for name, (model, desc) in SANDBOX_TOOLS.items()]
        return cls([*sandbox, *extra])

    def add(self, tool: ToolDef) -> None:
        self._tools[tool.name] = tool

    def set_probe(self, name: str, probe: Probe) -> None:
        """Attach an availability check to a registered tool (the wiring knows the image and backends)."""
        self._tools[name] = dataclasses.replace(self.get(name), probe=probe)

    def unavailable(self, name: str, tenant_id: str, scope: frozenset[str] | None = None) -> tuple[str, str] | None:
        """``(code, reason)`` when the tool cannot be offered now, whatever the policy says: it is outside the
        running skill's ``allowed-tools`` (``scope``) or its probe names what is missing; else None."""
        refused = out_of_scope(name, scope)
        if refused is not None:
            return refused
        probe = self.get(name).probe
        reason = probe(tenant_id) if probe is not None else None
        return None if reason is None else ("TOOL_UNAVAILABLE", reason)

    def get(self, name: str) -> ToolDef:
        tool = self._tools.get(name)
        if tool is None:
            raise NotFound("TOOL_NOT_FOUND", f"no tool named {name!r}; GET /v1/tools lists them")
        return tool

    def all(self) -> list[ToolDef]:
        return list(self._tools.values())

    def validate(self, name: str, raw: Any) -> dict[str, Any]:
        """Checked input as a plain dict (defaults filled) or a 422 naming the bad field."""
        tool = self.get(name)
        if not isinstance(raw, dict):
            raise Unprocessable("INVALID_TOOL_INPUT", f"{name}: input must be a JSON object")
        if tool.input_model is None:
            return raw
        try:
            model = tool.input_model.model_validate(raw)
        except ValidationError as exc:
            raise Unprocessable("INVALID_TOOL_INPUT", f"{name}: {_validation_message(exc)}") from None
        # What the caller said, checked: the record shows no invented defaults.
        return model.model_dump(exclude_unset=True)

    def status(self, name: str, tenant_id: str, allowed: bool) -> dict[str, Any]:
        """``available`` / ``unavailable_code`` / ``unavailable_reason`` of ``GET /v1/tools`` for a caller whose
        policy does (``allowed``) or does not allow the tool."""
        why = ("TOOL_DENIED", "the tenant's sandbox policy does not allow it") if not allowed else \
            self.unavailable(name, tenant_id)
        return {"available": why is None, "unavailable_code": why and why[0], "unavailable_reason": why and why[1]}

    def search(self, query: str, limit: int = 5) -> list[ToolDef]:
        """Tools ranked by how many query words their name and description contain."""
        words = {w for w in query.lower().replace("_", " ").split() if len(w) > 1}
        scored = []
        for tool in self._tools.values():
            text = f"{tool.name.replace('_', ' ')} {tool.description}".lower()
            score = sum(2 if w in tool.name else 1 for w in words if w in text)
            if score:
                scored.append((score, tool.name, tool))
        scored.sort(key=lambda s: (-s[0], s[1]))
        return [t for _, _, t in scored[:limit]]
