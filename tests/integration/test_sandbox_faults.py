"""Adoption after a crash, against the real engine: a manager that went away mid-call (as a killed server
does: its channels dropped, nothing cancelled) leaves the call running in its container; the next manager's
adoption ends it before sending anything, keeps the container, and numbers its calls past the old ones. More
containers running than the cap allows are adopted up to the cap and the rest kept stopped.

The server-level versions of these faults (kill -9, docker kill, the engine stopped and started) are in
tests/e2e/test_sandbox_faults_e2e.py."""

from __future__ import annotations

from typing import Any

import pytest
from sandbox_support import ok, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


def runs(docker_client: Any, container_id: str, needle: str) -> bool:
    return needle in str(docker_client.api.top(container_id)["Processes"])


def test_adoption_ends_the_calls_the_previous_manager_left_running(
        harness_factory: Any, tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> None:
    """The old manager's `sleep` outlives it; adoption's reset ends it (the container stays, the session's
    state stays) and the runner reports the old call's id, which the new manager's calls never reuse."""
    data_dir = tmp_path_factory.mktemp("crash")
    first = harness_factory(data_dir)
    ok(first.bash("ivy", "cd /tmp && export MARK=kept", session="s1"))
    container = first.run(first.manager.ensure_started("ivy"))
    for _ in range(5):  # push the old ids up: the new manager must continue past them
        ok(first.bash("ivy", "true", session="s2"))
    pending = first.submit(first.manager.call("ivy", "s1", "bash", {"command": "sleep 293"}))
    wait_until(lambda: runs(docker_client, container, "sleep 293"), 30, "the sleep to run")
    first.run(first.manager.shutdown())  # like kill -9: the stream goes, the runner is told nothing
    assert pending.result(10).result.error is not None
    assert runs(docker_client, container, "sleep 293")

    second = harness_factory(data_dir, server_id=first.config.instance_id)
    assert second.run(second.manager.adopt_or_reap())["adopted"] == [container]
    assert not runs(docker_client, container, "sleep 293")
    assert ok(second.bash("ivy", "pwd; echo $MARK", session="s1")) == "/tmp\nkept\n"
    channel = second.manager._sandboxes["ivy"].channel
    again = second.run(channel.reset(5))
    assert again["cancelled"] == 0 and again["max_id"] > 8  # 7 old frames at least, then ours after them


def test_more_running_containers_than_the_cap_are_adopted_up_to_it(
        harness_factory: Any, tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> None:
    """Three running containers, a new manager with a cap of 2: two are adopted, one is stopped (not removed),
    and its tenant's next call restarts it with its files."""
    data_dir = tmp_path_factory.mktemp("lowered")
    first = harness_factory(data_dir)
    for tenant in ("jay", "kay", "lee"):
        ok(first.call(tenant, "write_file", {"path": "own.txt", "content": tenant}))
    ids = {t: first.run(first.manager.ensure_started(t)) for t in ("jay", "kay", "lee")}
    first.run(first.manager.shutdown())

    second = harness_factory(data_dir, server_id=first.config.instance_id, max_live_containers=2)
    report = second.run(second.manager.adopt_or_reap())
    assert len(report["adopted"]) == 2 and report["removed"] == []
    (kept_stopped,) = [t for t, cid in ids.items() if cid not in report["adopted"]]
    assert not docker_client.api.inspect_container(ids[kept_stopped])["State"]["Running"]
    assert second.run(second.manager.info(kept_stopped))["state"] == "stopped"
    outcome = second.call(kept_stopped, "read_file", {"path": "own.txt"})
    assert kept_stopped in ok(outcome) and outcome.container_id == ids[kept_stopped]
    running = docker_client.api.containers(filters={"label": f"openanalyst.server={first.config.instance_id}"})
    assert len(running) == 2
