"""Adversarial resource use inside a sandbox is stopped by its limit, and afterwards both the attacking tenant
and another tenant (the witness) keep working through the same manager."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


def ok(outcome: Any) -> str:
    assert outcome.result.error is None, outcome.result
    return str(outcome.result.output)


def still_serving(harness: Any) -> None:
    """The attacker's sandbox and a second tenant's both answer after the attack."""
    assert "attacker-ok" in ok(harness.bash("attacker", "echo attacker-ok"))
    assert "witness-ok" in ok(harness.bash("witness", "echo witness-ok"))


def test_fork_bomb_hits_the_pids_limit(harness: Any) -> None:
    """A fork bomb is stopped by the pids limit (or its timeout) and leaves no processes behind."""
    ok(harness.bash("witness", "true"))
    result = harness.bash("attacker", "bomb() { bomb | bomb & }; bomb; sleep 5", timeout_s=8).result
    # Named even when the bomb's shell exits 0: the pids cgroup's count of refused forks confirms it.
    assert result.limit in ("pids", "timeout") or result.timed_out, result
    still_serving(harness)
    assert int(ok(harness.bash("attacker", "ps -e --no-headers | wc -l")).strip()) < 20


def test_memory_bomb_hits_the_memory_limit(harness: Any) -> None:
    """Growing memory without end is killed at the cgroup limit and reported as a memory limit or OOM."""
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n"
    result = harness.call("attacker", "python", {"code": code}, timeout_s=60).result
    oom = result.error is not None and result.error.code == "OOM_KILLED"
    assert result.limit == "memory" or oom, result
    still_serving(harness)


def test_endless_loop_is_stopped_at_its_timeout(harness: Any) -> None:
    """A busy loop ends at the call's timeout with timed_out and limit "timeout", not later."""
    result = harness.bash("attacker", "while :; do :; done", timeout_s=2).result
    assert result.timed_out and result.limit == "timeout", result
    assert result.duration_ms < 8000
    still_serving(harness)


def test_output_flood_is_truncated_at_the_cap(harness: Any) -> None:
    """Printing 20 MB returns at most the policy's output cap, marked truncated."""
    result = harness.bash("attacker", "yes flood | head -c 20000000").result
    cap = harness.policy("attacker").output_cap_bytes
    assert result.truncated and len(result.output.encode()) <= cap + 1024, len(result.output)
    still_serving(harness)


def test_filling_tmp_hits_the_tmpfs_size(harness: Any) -> None:
    """Writing past the tmpfs size fails with no space left (limit "disk"), and space frees again."""
    size_mb = harness.policy("attacker").tmpfs_mb
    result = harness.bash("attacker", f"dd if=/dev/zero of=/tmp/fill bs=1M count={size_mb * 2}").result
    assert result.limit == "disk" or "No space left" in result.output, result
    used = ok(harness.bash("attacker", "rm -f /tmp/fill; df -P /tmp | tail -1 | awk '{print $5}'"))
    assert int(used.strip().rstrip("%")) < 50, used
    still_serving(harness)


def test_processes_left_behind_are_killed_when_the_call_ends(harness: Any) -> None:
    """nohup, setsid and double-forked background processes do not outlive their call."""
    ok(harness.bash("attacker", "nohup sleep 1001 >/dev/null 2>&1 & setsid sleep 1002 & "
                                "( ( sleep 1003 & ) & ) ; echo started"))
    procs = ok(harness.bash("attacker", "ps -eo args"))
    assert not any(f"sleep {n}" in procs for n in (1001, 1002, 1003)), procs
    still_serving(harness)
