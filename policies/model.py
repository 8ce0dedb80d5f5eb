"""The sandbox policy: every limit a tenant's container and tool calls run under, validated once.

A ``Policy`` is frozen and forbids unknown fields, so a typo in a preset file is an error rather than a limit
silently left at its default. Policies are data (``policies/presets/*.toml``); ``policies.docker_args`` is the
one place a policy becomes Docker settings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.approvals import AskRule
from policies.network import EgressRules, NetworkMode

#: The runner protocol's output ceiling (toolrunner.protocol.MAX_OUTPUT_CAP, 1 MiB: output is JSON-escaped
#: inside an 8 MiB frame). Repeated here because policies imports nothing of ours.
MAX_OUTPUT_CAP_BYTES = 1024 * 1024


class Policy(BaseModel):
    """Limits for one tenant's sandbox: container resources, call timeouts, output size, tool access."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    cpus: float = Field(gt=0, le=64)
    memory_mb: int = Field(ge=32, le=1024 * 1024)
    pids: int = Field(ge=32, le=1_000_000)
    tmpfs_mb: int = Field(ge=1, le=1024 * 1024)
    nofile: int = Field(ge=64, le=1_048_576)
    fsize_mb: int = Field(ge=1, le=1024 * 1024)
    default_timeout_s: float = Field(gt=0, le=86_400)
    max_timeout_s: float = Field(gt=0, le=86_400)
    output_cap_bytes: int = Field(ge=1024, le=MAX_OUTPUT_CAP_BYTES)
    max_concurrent_calls: int = Field(ge=1, le=1024)
    allowed_tools: tuple[str, ...] | None = None
    denied_tools: tuple[str, ...] = ()
    # none / allowlist / open ("bridge" is open's older name); allowlist's rules and proxy limits are in
    # ``egress`` (policies/network.py, docs/egress.md).
    network: NetworkMode = "none"
    egress: EgressRules = Field(default_factory=EgressRules)
    # Workspace quota (docs/workspace-quota.md): the workspace becomes its own filesystem of this size and
    # inode count, enforced by the kernel. None: no quota (the workspace is a plain directory of the host's
    # disk). Without disk_inodes, one inode per 16 KiB.
    disk_mb: int | None = Field(default=None, ge=16, le=16 * 1024 * 1024)
    disk_inodes: int | None = Field(default=None, ge=1024, le=1 << 31)
    runtime: Literal["runc", "runsc"] | None = None
    # Files API (docs/files.md): the largest upload, and the largest total an archive may unpack to.
    files_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024, le=1 << 40)
    # Change report per tool call (docs/changes.md): which workspace files a call created, modified, deleted.
    change_reports: bool = True
    # Approvals (docs/approvals.md): these tools, or calls matching a rule, wait for a person's decision.
    always_ask: tuple[str, ...] = ()
    ask_rules: tuple[AskRule, ...] = ()
    approval_timeout_s: float = Field(default=300, gt=0, le=86_400)

    @field_validator("allowed_tools", "denied_tools", "always_ask")
    @classmethod
    def _tool_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        for tool in value:
            if not tool or not tool.replace("_", "").isalnum():
                raise ValueError(f"tool name {tool!r} is not a plain identifier")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.max_timeout_s < self.default_timeout_s:
            raise ValueError(f"max_timeout_s ({self.max_timeout_s}) is below default_timeout_s "
                             f"({self.default_timeout_s})")
        if self.disk_inodes is not None and self.disk_mb is None:
            raise ValueError("disk_inodes needs disk_mb (an inode count bounds nothing without a filesystem size)")
        if self.runtime == "runsc" and self.network != "none":
            # Measured: gVisor's sandbox networking fails on these kernels (gVisor issue #10704).
            raise ValueError("runtime 'runsc' needs network 'none'")
        if self.egress.configured and self.network != "allowlist":
            raise ValueError(f"egress rules apply only to network = 'allowlist' (this policy says {self.network!r})")
        return self

    def allows(self, tool: str) -> bool:
        """Whether ``tool`` may run under this policy (a denial wins over an allowance)."""
        if tool in self.denied_tools:
            return False
        return self.allowed_tools is None or tool in self.allowed_tools

    def ask_reason(self, tool: str, args: dict[str, object]) -> str | None:
        """Why a call of ``tool`` with ``args`` must wait for a person's decision; None when it need not."""
        if tool in self.always_ask:
            return f"policy {self.name!r} asks before every {tool!r} call"
        for rule in self.ask_rules:
            if rule.tool == tool and rule.matches(args):
                return f"policy {self.name!r}: {rule.describe()}"
        return None

    def effective_timeout(self, requested_s: float | None) -> float:
        """The timeout a call runs under: the default when none is asked, never above the maximum."""
        if requested_s is None or requested_s <= 0:
            return self.default_timeout_s
        return min(float(requested_s), self.max_timeout_s)
