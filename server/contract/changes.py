"""The change report of a tool call (docs/changes.md): which workspace files it created, modified or deleted."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from server.contract.common import Model
from toolrunner.results import ToolResult


class FileChange(Model):
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


class ChangeReport(Model):
    files: list[FileChange] = Field(description="Sorted by path; at most `limit` entries.")
    total: int = Field(ge=0, description="How many files changed, listed or not.")
    truncated: bool = Field(description="More files changed than are listed.")
    note: str | None = Field(description="Why the report may be incomplete (a cap reached, events lost).")


class ReportedResult(ToolResult):
    """A ``ToolResult`` with the host's change report; wherever a ToolResult goes it can go."""

    changes: ChangeReport | None = Field(default=None, description="The workspace files the call changed "
                                                                   "(null when the policy turns reports off).")


__all__ = ["ChangeReport", "FileChange", "ReportedResult"]
