"""Error codes in results: the runner's stay inside the fixed set; the host's own keep their real name, so the
audit log's ``finished`` record says why a call failed."""

from __future__ import annotations

from toolrunner.results import ToolError, ToolResult, error_result


def runner_result(code: str) -> dict[str, object]:
    return {"tool_name": "bash", "output": "", "exit_code": None, "duration_ms": 1.0, "truncated": False,
            "timed_out": False, "limit": None, "error": {"code": code, "message": "m"}}


def test_runner_codes_outside_the_fixed_set_become_internal() -> None:
    """A result from the (untrusted) runner cannot name a code the host did not define, not even a host one."""
    for code in ("TOO_MANY_CALLS", "SANDBOX_START_FAILED", "subprocess.Popen", "INVALID_TOOL_INPUT"):
        parsed = ToolResult.model_validate(runner_result(code))
        assert parsed.error is not None and parsed.error.code == "INTERNAL", code
    kept = ToolResult.model_validate(runner_result("FILE_NOT_FOUND"))
    assert kept.error is not None and kept.error.code == "FILE_NOT_FOUND"


def test_host_made_results_keep_their_code() -> None:
    """``error_result`` and ``ToolError.host`` keep the server's codes; a code that is not CODE_SHAPEd does not."""
    for code in ("TOO_MANY_CALLS", "INVALID_TOOL_INPUT", "SANDBOX_START_FAILED", "TOOL_DENIED", "INTERRUPTED"):
        result = error_result("bash", code, "why")
        assert result.error is not None and result.error.code == code
        assert result.model_dump()["error"]["code"] == code
    assert ToolError.host("AUDIT_UNAVAILABLE", "m").code == "AUDIT_UNAVAILABLE"
    assert ToolError.host("lower.case", "m").code == "INTERNAL"
    assert ToolError(code="TOO_MANY_CALLS", message="m").code == "INTERNAL"  # the default stays strict
