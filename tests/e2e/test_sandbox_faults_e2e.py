"""Faults the sandbox survives, with the server as a real process and the real engine (issue 8, point 4):
the server killed mid-call and restarted (the adopted container's leftover call is ended, its session kept),
a container killed mid-call (SANDBOX_DIED, audited, the next call recovers with the workspace), the engine
stopped and started again (a private second dockerd: calls fail fast with 503 while the rest of the API
serves, and work again without a server restart), and a full host (503 SANDBOX_CAPACITY with Retry-After)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import server_label
from second_engine import SecondEngine

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(240)]


def tool(server: Any, tenant: str | None, name: str, input: dict[str, Any], *, session_id: str | None = None,
         timeout: float = 60) -> httpx.Response:
    body: dict[str, Any] = {"input": input}
    if session_id is not None:
        body["session_id"] = session_id
    headers = {"X-Tenant-ID": tenant} if tenant is not None else {}  # no header: the owner
    return httpx.post(f"{server.base}/v1/tools/{name}", json=body, headers=headers, timeout=timeout)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)  # poll interval


def container_of(docker_client: Any, data_dir: Path, tenant: str) -> str:
    rows = docker_client.api.containers(filters={"label": [f"openanalyst.server={server_label(data_dir)}",
                                                           f"openanalyst.tenant={tenant}"]})
    assert len(rows) == 1, rows
    return str(rows[0]["Id"])


def runs(docker_client: Any, container_id: str, needle: str) -> bool:
    """Whether a process whose command line contains `needle` runs in the container (seen from the host)."""
    return any(needle in " ".join(row) for row in docker_client.api.top(container_id)["Processes"] or [])


class Background:
    """One HTTP request on a thread; `response` or `error` once it ends."""

    def __init__(self, send: Callable[[], httpx.Response]) -> None:
        self.response: httpx.Response | None = None
        self.error: Exception | None = None

        def run() -> None:
            try:
                self.response = send()
            except httpx.HTTPError as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()


def test_server_killed_mid_call_then_restarted_ends_the_call_and_keeps_the_session(
        serve: Callable[..., Any], sandbox_image: str, docker_client: Any, tmp_path: Path) -> None:
    """`kill -9` of the server during `sleep`: the restarted server adopts the same container, its `reset`
    ends the sleep (gone from the container's process list), the session's shell state and new calls work,
    and the audit log closes the killed call as INTERRUPTED."""
    data_dir = tmp_path / "data"
    first = serve(data_dir=data_dir)
    session = httpx.post(f"{first.base}/sessions", headers={"X-Tenant-ID": "fay"}).json()["session_id"]
    assert tool(first, "fay", "bash", {"command": "export KEPT=yes"}, session_id=session).json()["exit_code"] == 0
    container = container_of(docker_client, data_dir, "fay")
    Background(lambda: tool(first, "fay", "bash", {"command": "sleep 297", "timeout_s": 290},
                            session_id=session, timeout=300))
    wait_until(lambda: runs(docker_client, container, "sleep 297"), 30, "the sleep to run")
    first.proc.kill()
    assert first.proc.wait(10) == -9
    assert runs(docker_client, container, "sleep 297")  # the container and the call outlive the server

    second = serve(data_dir=data_dir)
    wait_until(lambda: not runs(docker_client, container, "sleep 297"), 60, "the adopted call to end")
    info = httpx.get(f"{second.base}/v1/sandbox", headers={"X-Tenant-ID": "fay"}, timeout=60).json()
    assert info["container_id"] == container and info["state"] == "running"  # adopted, not replaced
    assert any("ended 1 call(s) the previous server left running" in line for line in second.output)
    after = tool(second, "fay", "bash", {"command": "echo $KEPT"}, session_id=session).json()
    assert after["error"] is None and after["output"] == "yes\n", after
    assert tool(second, "fay", "bash", {"command": "echo fresh"}).json()["output"] == "fresh\n"
    records = httpx.get(f"{second.base}/v1/audit", params={"tool": "bash", "phase": "finished"},
                        headers={"X-Tenant-ID": "fay"}).json()["data"]
    assert [r["error_code"] for r in records] == [None, "INTERRUPTED", None, None]  # the killed call, closed


def test_container_killed_mid_call_is_sandbox_died_audited_and_the_next_call_recovers(
        serve: Callable[..., Any], sandbox_image: str, docker_client: Any, tmp_path: Path) -> None:
    """`docker kill` during a call: the call answers 200 with SANDBOX_DIED, the audit log has its `finished`
    record saying so, and the next call gets a fresh container with the workspace intact."""
    data_dir = tmp_path / "data"
    server = serve(data_dir=data_dir)
    assert tool(server, "kit", "write_file", {"path": "kept.txt", "content": "survives"}).json()["error"] is None
    container = container_of(docker_client, data_dir, "kit")
    call = Background(lambda: tool(server, "kit", "bash", {"command": "sleep 296"}))
    wait_until(lambda: runs(docker_client, container, "sleep 296"), 30, "the sleep to run")
    docker_client.api.kill(container)
    call.thread.join(60)
    assert call.response is not None and call.response.status_code == 200, call.error
    died = call.response.json()
    assert died["error"]["code"] == "SANDBOX_DIED" and "next call starts a fresh one" in died["error"]["message"]
    records = httpx.get(f"{server.base}/v1/audit", params={"tool": "bash", "phase": "finished"},
                        headers={"X-Tenant-ID": "kit"}).json()["data"]
    assert [(r["call_id"], r["error_code"]) for r in records] == [(died["call_id"], "SANDBOX_DIED")]
    read = tool(server, "kit", "read_file", {"path": "kept.txt"}).json()
    assert read["error"] is None and "survives" in read["output"]
    assert container_of(docker_client, data_dir, "kit") != container


@pytest.fixture
def engine(sandbox_image: str) -> Iterator[SecondEngine]:
    """A private second dockerd holding a copy of the sandbox image; stopped and removed afterwards."""
    second = SecondEngine()
    try:
        second.start()
        second.load(sandbox_image)
        yield second
    finally:
        second.close()


def test_engine_down_fails_calls_fast_and_they_work_again_once_it_is_back(
        serve: Callable[..., Any], engine: SecondEngine, tmp_path: Path) -> None:
    """With the engine down (at start, and again later) a call answers 503 SANDBOX_BACKEND_UNAVAILABLE within
    seconds while health, sessions and audit keep answering; a call in flight when it stops ends SANDBOX_DIED;
    once the engine is back calls work without a server restart, the workspace intact, and the container the
    engine could not remove while down is removed."""
    engine.stop()
    data_dir = tmp_path / "data"
    server = serve(env={"DOCKER_HOST": engine.host}, data_dir=data_dir)

    def assert_down() -> None:
        started = time.monotonic()
        refused = tool(server, "eve", "bash", {"command": "true"})
        assert time.monotonic() - started < 10 and refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "SANDBOX_BACKEND_UNAVAILABLE", refused.text
        assert httpx.get(f"{server.base}/health").status_code == 200
        assert httpx.post(f"{server.base}/sessions", headers={"X-Tenant-ID": "eve"}).status_code == 201
        assert httpx.get(f"{server.base}/sessions", headers={"X-Tenant-ID": "eve"}).status_code == 200
        assert httpx.get(f"{server.base}/v1/audit", headers={"X-Tenant-ID": "eve"}).status_code == 200

    def works() -> bool:
        answer = tool(server, "eve", "bash", {"command": "echo up"})
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] in ("SANDBOX_BACKEND_UNAVAILABLE", "SANDBOX_IMAGE_UNAVAILABLE")
            return False
        assert answer.status_code == 200 and answer.json()["output"] == "up\n", answer.text
        return True

    assert_down()
    engine.start()
    wait_until(works, 60, "calls to work once the engine is up")
    assert tool(server, "eve", "write_file", {"path": "kept.txt", "content": "across engine restarts"}
                ).json()["error"] is None
    label = f"openanalyst.server={server_label(data_dir)}"
    client = engine.client()
    try:
        old = [c.id for c in client.containers.list(all=True, filters={"label": label})]
        assert len(old) == 1
        call = Background(lambda: tool(server, "eve", "bash", {"command": "sleep 295"}))
        wait_until(lambda: runs(client, old[0], "sleep 295"), 30, "the sleep to run")
    finally:
        client.close()
    engine.stop()
    call.thread.join(60)
    assert call.response is not None and call.response.json()["error"]["code"] == "SANDBOX_DIED", call.error
    assert_down()
    engine.start()
    wait_until(works, 60, "calls to work once the engine is back")
    kept = tool(server, "eve", "read_file", {"path": "kept.txt"}).json()
    assert "across engine restarts" in kept["output"]
    client = engine.client()
    try:
        def only_the_new_one() -> bool:
            ids = [c.id for c in client.containers.list(all=True, filters={"label": label})]
            return len(ids) == 1 and ids != old

        wait_until(only_the_new_one, 60, "the dead container to be removed")
    finally:
        client.close()
    assert server.stop() == 0


def test_a_full_host_answers_503_with_retry_after(
        serve: Callable[..., Any], sandbox_image: str, docker_client: Any, tmp_path: Path) -> None:
    """With room for one tenant container, busy: another tenant's call is 503 SANDBOX_CAPACITY with
    Retry-After (audited like any refused call), the owner still gets its container, and once the busy
    call ends the other tenant's call evicts the idle container and runs."""
    data_dir = tmp_path / "data"
    server = serve(env={"OPENANALYST_SANDBOX_MAX_CONTAINERS": "1"}, data_dir=data_dir)
    assert tool(server, "gus", "bash", {"command": "true"}).json()["exit_code"] == 0
    gus = container_of(docker_client, data_dir, "gus")
    busy = Background(lambda: tool(server, "gus", "bash", {"command": "sleep 6"}))
    wait_until(lambda: runs(docker_client, gus, "sleep 6"), 30, "gus's call to run")
    refused = tool(server, "hal", "bash", {"command": "true"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "SANDBOX_CAPACITY", refused.text
    assert int(refused.headers["Retry-After"]) >= 1 and refused.json()["error"]["status"] == 503
    assert tool(server, None, "bash", {"command": "echo mine"}).json()["output"] == "mine\n"
    busy.thread.join(60)
    assert busy.response is not None and busy.response.json()["exit_code"] == 0
    assert tool(server, "hal", "bash", {"command": "echo in"}).json()["output"] == "in\n"
    assert not docker_client.api.inspect_container(gus)["State"]["Running"]  # evicted, kept stopped
    audit = httpx.get(f"{server.base}/v1/audit", params={"phase": "finished"},
                      headers={"X-Tenant-ID": "hal"}).json()["data"]
    assert [r["error_code"] for r in audit][:1] == ["SANDBOX_CAPACITY"]
