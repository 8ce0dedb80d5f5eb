"""Host-side models of what a tool call returns (docs/design.md §1), validated from the runner's plain dicts.

The runner is untrusted: unknown fields are refused, and an error code outside the known sets becomes
INTERNAL instead of being passed along (the host never acts on a name the sandbox chose). Results the host
or the server make themselves (``error_result``) keep their code — ``TOO_MANY_CALLS``,
``INVALID_TOOL_INPUT``, ``SANDBOX_START_FAILED``… — so the audit log says why a call really failed; such a
code must still look like one (upper-case letters, digits and ``_``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from toolrunner.protocol import ERROR_CODES

HOST_ERROR_CODES = frozenset(
    {"SANDBOX_DIED", "SANDBOX_UNRESPONSIVE", "OOM_KILLED", "SANDBOX_IMAGE_UNAVAILABLE",
     "SANDBOX_BACKEND_UNAVAILABLE", "TOOL_DENIED"}
)
KNOWN_CODES = ERROR_CODES | HOST_ERROR_CODES
Limit = Literal["timeout", "memory", "pids", "output", "disk"]
CODE_SHAPE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# Validation context under which a code outside KNOWN_CODES is kept: only the host's own results pass it.
HOST_MADE = {"host_made": True}


class ToolError(BaseModel):
    """Why a call failed: a stable code and a message for humans and models."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=64)
    message: str = Field(max_length=100_000)

    @field_validator("code")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        if value in KNOWN_CODES:
            return value
        host_made = isinstance(info.context, dict) and info.context.get("host_made") is True
        return value if host_made and CODE_SHAPE.fullmatch(value) else "INTERNAL"

    @classmethod
    def host(cls, code: str, message: str) -> ToolError:
        """An error the host or server makes itself: its code is kept even outside the runner's fixed set."""
        return cls.model_validate({"code": code, "message": message}, context=HOST_MADE)


class NetworkSummary(BaseModel):
    """What a call did on the network through the egress proxy (docs/egress.md): counts, bytes, and at most
    ``MAX_HOSTS`` hosts of each kind; every attempt's full record is in the audit log under the call's id.
    Made by the host from the proxy's records, never taken from the sandbox."""

    model_config = ConfigDict(extra="forbid")

    allowed: int = Field(ge=0, description="Connections the proxy let through.")
    denied: int = Field(ge=0, description="Connections the proxy refused (rule, address or limit).")
    open: int = Field(ge=0, description="Connections still open when the call ended (recorded when they end).")
    bytes_up: int = Field(ge=0)
    bytes_down: int = Field(ge=0)
    hosts: list[str] = Field(max_length=8, description="`host:port` reached, first seen first.")
    denied_hosts: list[str] = Field(max_length=8, description="`host:port` refused, first seen first.")
    more_hosts: int = Field(ge=0, description="Attempts to hosts beyond those listed.")


class FileChange(BaseModel):
    """One workspace file a call created, modified or deleted (docs/changes.md). Made by the host from inotify
    and its own reads of the workspace, never taken from the sandbox."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Relative to the workspace.")
    change: Literal["created", "modified", "deleted"]
    size: int | None = Field(ge=0, description="After the call (null when deleted).")
    sha256: str | None = Field(description="After the call (null when deleted, or larger than 256 MiB).")
    size_before: int | None = Field(ge=0, description="Before the call (modified and deleted files).")
    sha256_before: str | None = Field(description="Before the call, when the host had hashed it.")
    between_calls: bool = Field(description="Changed while no call of the tenant ran (a background process); "
                                            "reported with the next call.")
    overlapping: bool = Field(description="Another call of the tenant ran at the same time: it may be that "
                                          "call's change.")


class ChangeReport(BaseModel):
    """The workspace files a call changed, at most ``limit`` of them listed."""

    model_config = ConfigDict(extra="forbid")

    files: list[FileChange] = Field(description="Sorted by path; at most 100 entries.")
    total: int = Field(ge=0, description="How many files changed, listed or not.")
    truncated: bool = Field(description="More files changed than are listed.")
    note: str | None = Field(description="Why the report may be incomplete (a cap reached, events lost).")


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
    network: NetworkSummary | None = Field(
        default=None, description="The call's egress connections, under network = \"allowlist\" (else null).")
    changes: ChangeReport | None = Field(
        default=None, description="The workspace files the call changed (docs/changes.md); null when the policy "
                                  "turns reports off, for server-side tools, and for calls that did not run.")


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
        error=ToolError.host(code, message),
    )
