"""Tenants spread over two real engines (the main one and a second dockerd reached over TCP with mutual TLS):
capacities decide where a new tenant lands, a restarted server finds each tenant's container on its engine,
and while the second engine is down only its tenant's calls fail (naming the engine), the report says so,
and once it is back its tenant is served there again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine_support import SecondEngine, SshServer, halt_engine, resume_engine
from sandbox_support import Harness, make_config, ok, wait_until

from toolrunner.errors import SandboxBackendUnavailable

pytestmark = [pytest.mark.docker, pytest.mark.timeout(400)]
MAIN = "unix:///var/run/docker.sock"


def hosts(second: SecondEngine, main_capacity: int, second_capacity: int) -> str:
    return (f"{MAIN} capacity={main_capacity}, "
            f"{second.tcp_url} tls={second.client_tls} capacity={second_capacity}")


def tenants_on(client: Any, server_id: str) -> dict[str, str]:
    """tenant -> engine label of this server's running containers on one engine."""
    rows = client.containers.list(filters={"label": f"openanalyst.server={server_id}"})
    return {c.labels["openanalyst.tenant"]: c.labels["openanalyst.engine"] for c in rows}


def state(harness: Harness, url: str) -> str:
    reports = harness.run(harness.manager.backend.engines(harness.config.instance_id))
    return next(r["state"] for r in reports if r["url"] == url)


def test_placement_stickiness_outage_and_return(second_engine: SecondEngine, sandbox_image: str,
                                                docker_client: Any, tmp_path: Path) -> None:
    """alice fills the main engine's one slot, so bob goes to the second; with the second engine down bob
    gets SANDBOX_BACKEND_UNAVAILABLE naming it while alice works, and once it is back bob works there."""
    config = make_config(tmp_path / "data", sandbox_image, docker_hosts=hosts(second_engine, 1, 1))
    harness = Harness(config)
    remote = second_engine.client()
    try:
        assert ok(harness.bash("alice", "echo a")).strip() == "a"
        assert ok(harness.bash("bob", "echo b")).strip() == "b"
        assert tenants_on(docker_client, config.instance_id) == {"alice": MAIN}
        assert tenants_on(remote, config.instance_id) == {"bob": second_engine.tcp_url}
        report = {r["url"]: r for r in harness.run(harness.manager.backend.engines(config.instance_id))}
        assert [(r["state"], r["containers"], r["capacity"]) for r in report.values()] == [("up", 1, 1)] * 2

        with pytest.raises(Exception, match="at its capacity"):  # both engines full: a third tenant waits
            harness.bash("carol", "true")

        halt_engine(second_engine)
        bob = harness.manager._sandboxes.get("bob")
        wait_until(lambda: bob is None or not bob.alive, 30, "bob's attach stream to end with its engine")
        with pytest.raises(SandboxBackendUnavailable, match=f"engine {second_engine.tcp_url}"):
            harness.bash("bob", "echo b")
        assert ok(harness.bash("alice", "echo still")).strip() == "still"
        report = {r["url"]: r for r in harness.run(harness.manager.backend.engines(config.instance_id))}
        assert report[MAIN]["state"] == "up" and report[second_engine.tcp_url]["state"] == "down"
        assert report[second_engine.tcp_url]["error"]

        resume_engine(second_engine)
        remote.close()
        remote = second_engine.client()
        assert ok(harness.bash("bob", "echo back")).strip() == "back"
        assert tenants_on(remote, config.instance_id) == {"bob": second_engine.tcp_url}
        report = {r["url"]: r for r in harness.run(harness.manager.backend.engines(config.instance_id))}
        assert report[second_engine.tcp_url]["state"] == "up"
    finally:
        remote.close()
        harness.close()


def test_a_restarted_server_finds_each_tenant_on_its_engine(second_engine: SecondEngine, sandbox_image: str,
                                                            tmp_path: Path) -> None:
    """The engine is read back from where each container is listed: after a restart bob's calls go on in the
    same container on the second engine, and it counts against that engine's capacity."""
    config = make_config(tmp_path / "data", sandbox_image, docker_hosts=hosts(second_engine, 2, 1))
    first = Harness(config)
    try:
        ok(first.bash("alice", "true"))  # main: 2 free against 1
        ok(first.bash("bob", "echo kept > /tmp/mark"))  # 1 free each: the list's order, main
        ok(first.bash("carol", "true"))  # main full: the second engine
        carol = first.manager._sandboxes["carol"].container_id
        first.run(first.manager.shutdown())  # containers keep running for the next server
    finally:
        first.manager.backend.close()
        first.loop.call_soon_threadsafe(first.loop.stop)
    second = Harness(config)
    try:
        adopted = second.run(second.manager.adopt_or_reap())
        assert carol in adopted["adopted"], adopted
        assert second.manager._sandboxes["carol"].container_id == carol
        assert ok(second.bash("carol", "echo same")).strip() == "same"
        report = {r["url"]: r for r in second.run(second.manager.backend.engines(config.instance_id))}
        assert (report[second_engine.tcp_url]["containers"], report[MAIN]["containers"]) == (1, 2)
        with pytest.raises(Exception, match="at its capacity"):
            second.bash("dave", "true")
    finally:
        second.close()


def test_an_engine_down_at_start_is_swept_when_it_returns(second_engine: SecondEngine, sandbox_image: str,
                                                          tmp_path: Path) -> None:
    """A restarted server cannot list an engine that is down; once it answers, this server's containers there
    that nobody knows about are removed, and the tenant is placed afresh."""
    config = make_config(tmp_path / "data", sandbox_image, docker_hosts=hosts(second_engine, 1, 1))
    first = Harness(config)
    try:
        ok(first.bash("alice", "true"))
        ok(first.bash("bob", "true"))  # the second engine
        old = first.manager._sandboxes["bob"].container_id
        first.run(first.manager.shutdown())
    finally:
        first.manager.backend.close()
        first.loop.call_soon_threadsafe(first.loop.stop)
    halt_engine(second_engine)
    second = Harness(config)
    remote = None
    try:
        adopted = second.run(second.manager.adopt_or_reap())
        assert len(adopted["adopted"]) == 1  # alice, on the main engine
        with pytest.raises(Exception, match="at its capacity"):  # the main engine is full, the other down
            second.bash("bob", "true")
        resume_engine(second_engine)
        wait_until(lambda: state(second, second_engine.tcp_url) == "up", 15, "the engine to be seen back")
        assert ok(second.bash("bob", "echo fresh")).strip() == "fresh"
        remote = second_engine.client()
        ids = [c.id for c in remote.containers.list(all=True, filters={
            "label": f"openanalyst.server={config.instance_id}"})]
        assert old not in ids and ids == [second.manager._sandboxes["bob"].container_id]
    finally:
        if remote is not None:
            remote.close()
        second.close()


def test_an_ssh_engine_and_a_tls_engine_in_one_list(second_engine: SecondEngine, sshd: SshServer,
                                                    sandbox_image: str, docker_client: Any, tmp_path: Path) -> None:
    """The list mixes kinds: the main engine reached over SSH (its ssh config given per entry) takes one
    tenant, the TLS engine the next; both answer calls through their own attach path."""
    ssh_url = "ssh://oa-engine-test"
    hosts = (f"{ssh_url} ssh_config={sshd.config} capacity=1, "
             f"{second_engine.tcp_url} tls={second_engine.client_tls} capacity=1")
    config = make_config(tmp_path / "data", sandbox_image, docker_hosts=hosts)
    harness = Harness(config)
    try:
        assert ok(harness.bash("erin", "echo over-ssh")).strip() == "over-ssh"
        assert ok(harness.bash("frank", "echo over-tls")).strip() == "over-tls"
        assert tenants_on(docker_client, config.instance_id) == {"erin": ssh_url}
        report = {r["url"]: r["state"] for r in harness.run(harness.manager.backend.engines(config.instance_id))}
        assert report == {ssh_url: "up", second_engine.tcp_url: "up"}
    finally:
        harness.close()


def test_two_new_tenants_at_once_take_one_slot_each(second_engine: SecondEngine, sandbox_image: str,
                                                    docker_client: Any, tmp_path: Path) -> None:
    """Both start concurrently with one slot on each engine: a create in flight counts, so they never both
    land on the same engine."""
    config = make_config(tmp_path / "data", sandbox_image, docker_hosts=hosts(second_engine, 1, 1))
    harness = Harness(config)
    remote = second_engine.client()
    try:
        started = [harness.submit(harness.manager.call(t, "s1", "bash", {"command": "true"})) for t in ("gil", "hal")]
        for future in started:
            ok(future.result(90))
        here, there = tenants_on(docker_client, config.instance_id), tenants_on(remote, config.instance_id)
        assert len(here) == len(there) == 1 and set(here) | set(there) == {"gil", "hal"}
    finally:
        remote.close()
        harness.close()


def test_an_engine_without_the_image_gets_a_copy(second_engine: SecondEngine, sandbox_image: str,
                                                  docker_client: Any, tmp_path: Path) -> None:
    """The second engine loses the sandbox image; a tenant placed there still gets its container: the server
    streams the image over from the main engine (no registry, no file) and creates it, and the engine keeps
    the image for the next tenant."""
    remote = second_engine.client()
    config = make_config(tmp_path / "data", sandbox_image, docker_hosts=hosts(second_engine, 1, 2))
    harness = Harness(config)
    try:
        for container in remote.containers.list(all=True, filters={"ancestor": sandbox_image}):
            container.remove(force=True)
        remote.images.remove(sandbox_image, force=True)
        assert not remote.images.list(name=sandbox_image.split(":")[0], filters={"reference": sandbox_image})
        assert ok(harness.bash("alice", "echo a")).strip() == "a"  # the second engine (freest), after the copy
        assert tenants_on(remote, config.instance_id) == {"alice": second_engine.tcp_url}
        assert remote.images.get(sandbox_image).id == docker_client.images.get(sandbox_image).id
        assert ok(harness.bash("bob", "echo b")).strip() == "b"  # a tie: the main engine, first in the list
        assert ok(harness.bash("carol", "echo c")).strip() == "c"  # the copy stays: no second one needed
        assert tenants_on(remote, config.instance_id) == {"alice": second_engine.tcp_url,
                                                          "carol": second_engine.tcp_url}
    finally:
        harness.close()
        remote.close()
