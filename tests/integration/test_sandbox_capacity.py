"""The cap on live containers against the real engine, with a cap of 2 and three tenants: the least recently
used idle container is stopped to make room (its workspace kept, its next call restarts it), a start with
every slot busy is refused at once with SANDBOX_CAPACITY, a prestart never evicts, the owner is never
counted, one tenant never gets two containers, and old stopped containers are removed beyond their cap."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from sandbox_support import Harness, make_config, ok, wait_until

from toolrunner.errors import SandboxCapacity

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


@pytest.fixture
def small(sandbox_image: str, tmp_path: Path) -> Iterator[Harness]:
    """A manager allowing 2 live tenant containers (and 1 stopped one), removed after the test."""
    h = Harness(make_config(tmp_path / "data", sandbox_image, max_live_containers=2, max_stopped_containers=1,
                            capacity_retry_after_s=3))
    try:
        yield h
    finally:
        h.close()


def containers(docker_client: Any, h: Harness, *, running: bool) -> dict[str, str]:
    """tenant → container id of this harness's containers (running ones, or stopped ones)."""
    rows = docker_client.api.containers(all=True, filters={"label": f"openanalyst.server={h.config.instance_id}"})
    return {r["Labels"]["openanalyst.tenant"]: r["Id"] for r in rows if (r["State"] == "running") == running}


def busy(h: Harness, docker_client: Any, tenant: str, marker: str) -> Future[Any]:
    """Start a long call for `tenant` and return once its process runs in the container."""
    pending = h.submit(h.manager.call(tenant, "s", "bash", {"command": f"sleep {marker}"}))
    wait_until(lambda: tenant in containers(docker_client, h, running=True) and f"sleep {marker}" in str(
        docker_client.api.top(containers(docker_client, h, running=True)[tenant])["Processes"]), 30,
        f"{tenant}'s call to run")
    return pending


def test_the_least_recently_used_idle_container_makes_room(small: Harness, docker_client: Any) -> None:
    """a, b run; c's first call stops a's (the older) container; a's next call restarts it with its files,
    stopping b's; never more than 2 run."""
    ok(small.call("ann", "write_file", {"path": "mine.txt", "content": "ann's"}))
    ok(small.bash("ben", "true"))
    first = containers(docker_client, small, running=True)
    assert set(first) == {"ann", "ben"}
    ok(small.bash("cat", "true"))
    assert set(containers(docker_client, small, running=True)) == {"ben", "cat"}
    assert containers(docker_client, small, running=False) == {"ann": first["ann"]}
    assert small.run(small.manager.info("ann"))["state"] == "stopped"
    again = small.call("ann", "read_file", {"path": "mine.txt"})
    assert "ann's" in ok(again) and again.container_id == first["ann"]
    assert set(containers(docker_client, small, running=True)) == {"ann", "cat"}
    assert set(containers(docker_client, small, running=False)) == {"ben"}


def test_with_every_slot_busy_a_new_tenant_is_refused_at_once(small: Harness, docker_client: Any) -> None:
    """Two calls in flight hold both slots: a third tenant gets SANDBOX_CAPACITY with a Retry-After within a
    second, nothing is started for it, and once a call ends it gets a container."""
    slow = [busy(small, docker_client, "ann", "101"), busy(small, docker_client, "ben", "102")]
    started = time.monotonic()
    with pytest.raises(SandboxCapacity) as refused:
        small.bash("cat", "true")
    assert time.monotonic() - started < 2 and refused.value.code == "SANDBOX_CAPACITY"
    assert refused.value.status == 503 and refused.value.retry_after_s == 3 and "none is idle" in refused.value.message
    assert "cat" not in containers(docker_client, small, running=True) | containers(docker_client, small,
                                                                                    running=False)
    slow[0].cancel()
    wait_until(lambda: small.run(small.manager.info("ann"))["calls_in_flight"] == 0, 30, "ann's call to end")
    assert ok(small.bash("cat", "echo in")) == "in\n"
    assert set(containers(docker_client, small, running=True)) == {"ben", "cat"}
    slow[1].cancel()
    wait_until(lambda: small.run(small.manager.info("ben"))["calls_in_flight"] == 0, 30, "ben's call to end")


def test_prestart_never_evicts_and_the_owner_is_not_counted(small: Harness, docker_client: Any) -> None:
    """At the cap a prestart starts nothing and stops nothing; the owner's container starts even with both
    slots busy."""
    ok(small.bash("ann", "true"))
    ok(small.bash("ben", "true"))
    small.run(small.manager.prestart("cat"))
    wait_until(lambda: not small.manager._tasks, 30, "the prestart to finish")
    assert set(containers(docker_client, small, running=True)) == {"ann", "ben"}
    slow = [busy(small, docker_client, "ann", "103"), busy(small, docker_client, "ben", "104")]
    assert ok(small.bash("owner", "echo owner")) == "owner\n"
    assert set(containers(docker_client, small, running=True)) == {"ann", "ben", "owner"}
    for pending in slow:
        pending.cancel()
    wait_until(lambda: all(small.run(small.manager.info(t))["calls_in_flight"] == 0 for t in ("ann", "ben")),
               30, "the calls to end")


def test_one_tenant_never_gets_a_second_container(small: Harness, docker_client: Any) -> None:
    """Four concurrent first calls (the policy's cap) and a prestart of one tenant start exactly one container."""
    small.run(small.manager.prestart("dan"))
    calls = [small.submit(small.manager.call("dan", f"s{i}", "bash", {"command": "cat /etc/hostname"}))
             for i in range(4)]
    hosts = {ok(c.result(60)) for c in calls}
    assert len(hosts) == 1
    rows = docker_client.api.containers(all=True, filters={"label": [
        f"openanalyst.server={small.config.instance_id}", "openanalyst.tenant=dan"]})
    assert len(rows) == 1


def test_stopped_containers_beyond_their_cap_are_removed(small: Harness, docker_client: Any) -> None:
    """With room for one stopped container, a second eviction removes the older stopped one; that tenant's
    next call creates a fresh container on the same workspace."""
    ok(small.call("ann", "write_file", {"path": "mine.txt", "content": "still ann's"}))
    ann_first = small.run(small.manager.ensure_started("ann"))
    ok(small.bash("ben", "true"))
    ok(small.bash("cat", "true"))  # stops ann
    ok(small.bash("dan", "true"))  # stops ben; ann's stopped container is removed
    assert set(containers(docker_client, small, running=False)) == {"ben"}
    assert not docker_client.api.containers(all=True, filters={"id": ann_first})
    again = small.call("ann", "read_file", {"path": "mine.txt"})
    assert "still ann's" in ok(again) and again.container_id != ann_first


def test_eviction_spares_live_background_jobs_and_the_loss_is_told(small: Harness, docker_client: Any) -> None:
    """Cap 2: ann (used first) runs a background job, ben only has shell state; a third tenant's start stops
    ben's container although ann's is the least recently used, because the runners say what each holds. The
    job keeps running. ben's next bash call in the session that had the state is answered SESSION_STATE_LOST
    (not run), once; GET /v1/sandbox's last_stop says when and why; a session new since then is not told."""
    job = ok(small.call("ann", "bash", {"command": "while :; do echo tick; sleep 0.2; done",
                                        "run_in_background": True}, session="job"))
    token = job.split("background with id ", 1)[1].split()[0]
    ok(small.bash("ben", "cd /tmp && export KEPT=yes", session="work"))
    ok(small.bash("cat", "true"))
    assert set(containers(docker_client, small, running=True)) == {"ann", "cat"}
    assert set(containers(docker_client, small, running=False)) == {"ben"}
    assert "tick" in ok(small.call("ann", "bash_output", {"id": token}, session="job"))

    stop = small.run(small.manager.info("ben"))["last_stop"]
    assert stop["reason"] == "evicted" and stop["sessions"] == 1 and stop["at"].endswith("Z"), stop
    assert stop["held"]["sessions"] == 1 and stop["held"]["background"] == 0, stop
    assert small.run(small.manager.info("ann"))["last_stop"] is None

    assert ok(small.bash("ben", "echo fresh", session="new")) == "fresh\n"  # a new session: nothing lost
    lost = small.bash("ben", "pwd", session="work").result
    assert lost.error is not None and lost.error.code == "SESSION_STATE_LOST", lost
    assert "evicted" not in lost.error.message and "make room" in lost.error.message
    assert lost.output == "" and lost.exit_code is None  # not run
    assert ok(small.bash("ben", "echo \"[$KEPT]\"", session="work")) == "[]\n"  # told once, then runs
    # Making room for ben again stopped cat's container (ann's still holds the job): cat's file tool runs,
    # its next bash in the old session is told.
    assert set(containers(docker_client, small, running=True)) == {"ann", "ben"}
    ok(small.call("cat", "write_file", {"path": "x.txt", "content": "x"}, session="s1"))
    told = small.bash("cat", "true", session="s1").result
    assert told.error is not None and told.error.code == "SESSION_STATE_LOST", told
    assert "tick" in ok(small.call("ann", "bash_output", {"id": token}, session="job"))
