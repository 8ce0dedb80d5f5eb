"""Host-side models of what a tool call returns (docs/design.md §1), validated from the runner's plain dicts.

The runner is untrusted: unknown fields are refused, and an error code outside the known sets becomes
INTERNAL instead of being passed along (the host never acts on a name the sandbox chose).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from toolrunner.protocol import ERROR_CODES

HOST_ERROR_CODES = frozenset(
    {"SANDBOX_DIED", "SANDBOX_UNRESPONSIVE", "OOM_KILLED", "SANDBOX_IMAGE_UNAVAILABLE",
     "SANDBOX_BACKEND_UNAVAILABLE", "TOOL_DENIED"}
)
KNOWN_CODES = ERROR_CODES | HOST_ERROR_CODES
Limit = Literal["timeout", "memory", "pids", "output", "disk"]


class ToolError(BaseModel):
    """Why a call failed: a stable code and a message for humans and models."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=64)
    message: str = Field(max_length=100_000)

    @field_validator("code")
    @classmethod
    def _known(cls, value: str) -> str:
        return value if value in KNOWN_CODES else "INTERNAL"


class ToolResult(BaseModel):
    """One call's outcome; `limit` names the limit that stopped or cut it."""

    model_config = ConfigDict(extra="forbid")

    tool_name: str = Field(max_length=256)
    output: str
    exit_code: int | None
    duration_ms: float = Field(ge=0)
    truncated: bool
    timed_out: bool
    limit: Limit | None
    error: ToolError | None


def error_result(
    tool: str,
    code: str,
    message: str,
    *,
    duration_ms: float = 0.0,
    output: str = "",
    timed_out: bool = False,
    limit: Limit | None = None,
) -> ToolResult:
    """A result the host makes itself (channel broke, host deadline passed, call denied...)."""
    return ToolResult(
        tool_name=tool,
        output=output,
        exit_code=None,
        duration_ms=round(max(duration_ms, 0.0), 3),
        truncated=False,
        timed_out=timed_out,
        limit=limit,
        error=ToolError(code=code, message=message),
    )
