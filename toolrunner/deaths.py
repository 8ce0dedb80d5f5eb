"""What a call that a dying container took with it answers: one code and one message per way of dying.

The manager finds out how the container ended (once, shared by every call in flight) and this module turns
that into the call's result, keeping whatever output the call had produced before.
"""

from __future__ import annotations

from toolrunner.results import ToolError, ToolResult, error_result

DEATH_CODES = frozenset({"SANDBOX_DIED", "SANDBOX_UNRESPONSIVE", "PROTOCOL_ERROR"})


def death_result(result: ToolResult | None, *, unresponsive: bool, oom: bool, unresponsive_after_s: float,
                 memory_mb: int) -> ToolResult:
    """SANDBOX_UNRESPONSIVE, OOM_KILLED (limit "memory") or SANDBOX_DIED, saying what happens next."""
    tool = result.tool_name if result is not None else "?"
    if unresponsive:
        message = (f"the sandbox's runner stopped answering (nothing from it within {unresponsive_after_s:g} s "
                   "of a ping); its container was removed and the next call starts a fresh one; the workspace "
                   "is kept")
        base = result or error_result(tool, "SANDBOX_UNRESPONSIVE", message)
        return base.model_copy(update={"error": ToolError.host("SANDBOX_UNRESPONSIVE", message)})
    if oom:
        message = f"the sandbox ran out of memory (limit {memory_mb} MB) and was restarted; the workspace is kept"
        base = result or error_result(tool, "OOM_KILLED", message, limit="memory")
        return base.model_copy(update={"error": ToolError.host("OOM_KILLED", message), "limit": "memory"})
    message = "the sandbox container stopped during the call; the next call starts a fresh one"
    if result is not None and result.error is not None and result.error.code in DEATH_CODES:
        message = f"{message} ({result.error.message})"
    base = result or error_result(tool, "SANDBOX_DIED", message)
    return base.model_copy(update={"error": ToolError.host("SANDBOX_DIED", message)})
