"""Container lifecycle against the real engine: death mid-call, OOM, adoption after a restart, stale-container
reaping, and a hung engine turning into SANDBOX_BACKEND_UNAVAILABLE instead of a hang."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import docker
import pytest
from sandbox_support import ok, wait_until

from policies.loader import policy_for
from policies.model import Policy
from toolrunner.docker_backend import DockerBackend
from toolrunner.errors import SandboxBackendUnavailable, SandboxStartFailed
from toolrunner.manager import SandboxManager

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


def test_container_killed_mid_call_fails_the_call_and_the_next_gets_a_fresh_one(
        harness: Any, docker_client: Any) -> None:
    """`docker kill` during a sleep → SANDBOX_DIED; the next call gets a new container, workspace intact."""
    ok(harness.call("kim", "write_file", {"path": "survivor.txt", "content": "still here"}))
    old_id = harness.run(harness.manager.ensure_started("kim"))
    pending = harness.submit(harness.manager.call("kim", "s", "bash", {"command": "sleep 60"}))
    wait_until(lambda: "sleep 60" in str(docker_client.api.top(old_id).get("Processes")), 30, "sleep to run")
    docker_client.api.kill(old_id)
    died = pending.result(30)
    assert died.result.error is not None and died.result.error.code == "SANDBOX_DIED", died.result
    after = harness.call("kim", "read_file", {"path": "survivor.txt"})
    assert "still here" in ok(after) and after.container_id != old_id
    wait_until(lambda: not docker_client.api.containers(all=True, filters={"id": old_id}), 30, "old removed")


def test_a_removed_container_is_not_reported_as_a_death(
        harness: Any, docker_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """``remove`` (DELETE /v1/sandbox) ends the container deliberately: it is gone, its stop says "removed",
    and the log says it was removed, not that it died (an operator reading the log would look for a crash)."""
    old_id = harness.run(harness.manager.ensure_started("rem"))
    with caplog.at_level("INFO", logger="toolrunner.manager"):
        harness.run(harness.manager.remove("rem"))
    assert not docker_client.api.containers(all=True, filters={"id": old_id})
    messages = [r.getMessage() for r in caplog.records if r.name == "toolrunner.manager"]
    assert f"sandbox {old_id[:12]} of rem removed" in messages, messages
    assert not [m for m in messages if "died" in m], messages
    info = harness.run(harness.manager.info("rem"))
    assert info["last_stop"]["reason"] == "removed", info["last_stop"]
    assert "back" in ok(harness.bash("rem", "echo back"))


def test_memory_exhaustion_is_reported_and_the_sandbox_recovers(harness: Any) -> None:
    """Allocating past the memory limit ends as OOM_KILLED or limit "memory", and the next call works."""
    outcome = harness.call("mia", "python", {"code": "b = bytearray(600 * 1024 * 1024); b[::4096] = b'x' * "
                                                     "(len(b) // 4096); print('survived')"})
    result = outcome.result
    assert "survived" not in result.output
    oom = result.error is not None and result.error.code == "OOM_KILLED"
    assert result.limit == "memory" or oom, result
    assert "fine" in ok(harness.bash("mia", "echo fine"))


def test_restarted_manager_adopts_running_container_and_reaps_stale_ones(
        harness_factory: Any, tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
        sandbox_image: str) -> None:
    """A new manager with the same server id re-attaches to the running container (same id, still works)
    and removes this server's container whose image-hash label is stale."""
    data_dir = tmp_path_factory.mktemp("adopt")
    first = harness_factory(data_dir)
    ok(first.call("ada", "write_file", {"path": "f.txt", "content": "before restart"}))
    container_id = first.run(first.manager.ensure_started("ada"))
    first.run(first.manager.shutdown())  # channels closed, container left running
    stale = docker_client.containers.create(
        sandbox_image, entrypoint=["sleep", "300"], detach=True, network_mode="none",
        labels={"openanalyst.test": "1", "openanalyst.managed": "1", "openanalyst.tenant": "old",
                "openanalyst.server": first.config.instance_id, "openanalyst.image_hash": "0" * 12})
    stale.start()
    second = harness_factory(data_dir, server_id=first.config.instance_id)
    report = second.run(second.manager.adopt_or_reap())
    assert report["adopted"] == [container_id] and report["removed"] == [stale.id]
    outcome = second.call("ada", "read_file", {"path": "f.txt"})
    assert "before restart" in ok(outcome) and outcome.container_id == container_id
    assert not docker_client.api.containers(all=True, filters={"id": stale.id})


def _hanging_engine(path: Path) -> socket.socket:
    """A unix socket that accepts connections and never answers, like a deadlocked dockerd."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return server


def test_hung_engine_becomes_backend_unavailable_within_the_deadline(harness: Any, tmp_path: Path) -> None:
    """With an engine that never answers, a call raises SANDBOX_BACKEND_UNAVAILABLE after the deadline."""
    sock_path = tmp_path / "hung.sock"
    server = _hanging_engine(sock_path)
    client = docker.DockerClient(base_url=f"unix://{sock_path}", timeout=2, version="1.41")
    try:
        backend = DockerBackend(client, timeout_s=1.5)

        async def attempt() -> None:
            manager = SandboxManager(harness.config.model_copy(update={"server_id": "hung"}),
                                     harness.policy, backend=backend)
            try:
                await manager.call("hank", "s", "bash", {"command": "true"})
            finally:
                await manager.shutdown()

        started = time.monotonic()
        with pytest.raises(SandboxBackendUnavailable) as info:
            harness.run(attempt(), 30)
        assert info.value.code == "SANDBOX_BACKEND_UNAVAILABLE" and time.monotonic() - started < 10
        backend.close()
    finally:
        client.close()
        server.close()
    assert "alive" in ok(harness.bash("kim", "echo alive"))


def test_runner_that_never_says_hello_fails_clearly_and_leaves_nothing(harness_factory: Any) -> None:
    """A container whose runner exits at once raises SANDBOX_START_FAILED with its stderr; it is removed."""
    h = harness_factory(runner_command=["bash", "-c", "echo runner-boom >&2; exit 3"], start_timeout_s=10)
    with pytest.raises(SandboxStartFailed) as info:
        h.call("sam", "bash", {"command": "true"})
    assert info.value.code == "SANDBOX_START_FAILED" and "runner-boom" in info.value.message
    assert h.run(h.manager.backend.list_managed(h.config.instance_id)) == []


def test_adoption_refuses_a_container_made_under_another_policy(
        harness_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """After a restart with a changed policy, the old container is removed and a compliant one started."""
    data_dir = tmp_path_factory.mktemp("policy-change")
    first = harness_factory(data_dir)
    old_id = first.run(first.manager.ensure_started("pat"))
    first.run(first.manager.shutdown())
    bigger = Policy.model_validate({**policy_for("ci").model_dump(), "memory_mb": 384})
    second = harness_factory(data_dir, policies={"pat": bigger}, server_id=first.config.instance_id)
    report = second.run(second.manager.adopt_or_reap())
    assert report == {"adopted": [], "removed": [old_id]}
    new_id = second.call("pat", "bash", {"command": "true"}).container_id
    attrs = second.run(second.manager.backend.inspect(new_id))
    assert new_id != old_id and attrs["HostConfig"]["Memory"] == 384 << 20
