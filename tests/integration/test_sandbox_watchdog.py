"""The runner watchdog against the real engine: a runner frozen with SIGSTOP (mid-call or between calls) fails
the call with SANDBOX_UNRESPONSIVE within the bound instead of every later call timing out, and a runner
killed with SIGKILL is replaced; either way the tenant's next call runs in a fresh container, workspace kept.

The runner is signalled from the host by its host pid (the test runs as root), found as the child of the
container's init that runs ``toolrunner.runner``: never by uid, which the runner is free to change.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from sandbox_support import Harness, ok, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]
BOUND_S = 1.0  # unresponsive_after_s for these tests; the default is 10 s


def code(outcome: Any) -> str | None:
    return outcome.result.error.code if outcome.result.error is not None else None


def runner_pid(docker_client: Any, container_id: str) -> int:
    """The host pid of the container's runner: the child of its init (tini) running toolrunner.runner."""
    init = int(docker_client.api.inspect_container(container_id)["State"]["Pid"])
    top = docker_client.api.top(container_id)
    titles = top["Titles"]
    pid_at, ppid_at, cmd_at = titles.index("PID"), titles.index("PPID"), titles.index("CMD")
    found = [int(row[pid_at]) for row in top["Processes"]
             if int(row[ppid_at]) == init and "toolrunner.runner" in row[cmd_at]]
    assert len(found) == 1, top
    return found[0]


def gone(docker_client: Any, container_id: str) -> bool:
    return not docker_client.api.containers(all=True, filters={"id": container_id})


@pytest.fixture(scope="module")
def wd(harness_factory: Any) -> Harness:
    """A manager with a short unresponsiveness bound, shared by this module's tests (one tenant each)."""
    h: Harness = harness_factory(unresponsive_after_s=BOUND_S)
    return h


def test_runner_frozen_mid_call_fails_it_as_unresponsive_and_the_next_call_gets_a_fresh_container(
        wd: Harness, docker_client: Any) -> None:
    """SIGSTOP during a long sleep: the call ends with SANDBOX_UNRESPONSIVE long before its own 110 s
    deadline, the frozen container is removed, and the next call works in a new one with the files kept."""
    ok(wd.call("frida", "write_file", {"path": "kept.txt", "content": "still here"}))
    old_id = wd.run(wd.manager.ensure_started("frida"))
    pid = runner_pid(docker_client, old_id)
    pending = wd.submit(wd.manager.call("frida", "s", "bash", {"command": "sleep 100"}, timeout_s=110))
    wait_until(lambda: "sleep 100" in str(docker_client.api.top(old_id)["Processes"]), 30, "sleep to run")
    os.kill(pid, signal.SIGSTOP)
    frozen = pending.result(60)  # far below the call's own deadline: only the watchdog can end it in time
    assert code(frozen) == "SANDBOX_UNRESPONSIVE", frozen.result
    assert frozen.container_id == old_id and "stopped answering" in str(frozen.result.error)
    assert gone(docker_client, old_id)  # removed before the failed call was answered
    after = wd.call("frida", "read_file", {"path": "kept.txt"})
    assert "still here" in ok(after) and after.container_id != old_id


def test_runner_frozen_between_calls_fails_the_next_call_only(wd: Harness, docker_client: Any) -> None:
    """SIGSTOP while idle: the next call fails with SANDBOX_UNRESPONSIVE (not TIMEOUT after 20 s + grace),
    and the one after it runs in a fresh container."""
    old_id = ok_id = wd.bash("gus", "echo one").container_id
    assert ok_id is not None
    os.kill(runner_pid(docker_client, old_id), signal.SIGSTOP)
    frozen = wd.bash("gus", "echo two", wait=60)
    assert code(frozen) == "SANDBOX_UNRESPONSIVE" and frozen.container_id == old_id, frozen.result
    after = wd.bash("gus", "echo three")
    assert ok(after) == "three\n" and after.container_id != old_id
    assert gone(docker_client, old_id)


def test_runner_killed_between_calls_is_replaced_before_the_next_call(wd: Harness, docker_client: Any) -> None:
    """SIGKILL while idle: the manager sees the stream end, and the next call works in a fresh container."""
    old_id = wd.run(wd.manager.ensure_started("hal"))
    os.kill(runner_pid(docker_client, old_id), signal.SIGKILL)
    wait_until(lambda: wd.run(wd.manager.info("hal"))["state"] == "absent", 30, "the manager to see the end")
    after = wd.bash("hal", "echo fresh")
    assert ok(after) == "fresh\n" and after.container_id != old_id
    assert gone(docker_client, old_id)


def test_runner_killed_mid_call_fails_it_as_died_and_the_next_call_gets_a_fresh_container(
        wd: Harness, docker_client: Any) -> None:
    """SIGKILL during a sleep: SANDBOX_DIED at once, then a fresh container for the next call."""
    old_id = wd.run(wd.manager.ensure_started("ida"))
    pid = runner_pid(docker_client, old_id)
    pending = wd.submit(wd.manager.call("ida", "s", "bash", {"command": "sleep 100"}, timeout_s=110))
    wait_until(lambda: "sleep 100" in str(docker_client.api.top(old_id)["Processes"]), 30, "sleep to run")
    os.kill(pid, signal.SIGKILL)
    died = pending.result(60)
    assert code(died) == "SANDBOX_DIED", died.result
    after = wd.bash("ida", "echo fresh")
    assert ok(after) == "fresh\n" and after.container_id != old_id
    assert gone(docker_client, old_id)


def test_a_quiet_call_longer_than_the_bound_is_not_mistaken_for_a_frozen_runner(wd: Harness) -> None:
    """A call silent for several bounds succeeds in the same container: the runner answers the pings."""
    first = wd.bash("jo", "true")
    ok(first)
    long = wd.bash("jo", f"sleep {4 * BOUND_S:g}; echo awake", timeout_s=60)
    assert ok(long) == "awake\n" and long.container_id == first.container_id
