"""``openanalyst --serve`` with OPENANALYST_DOCKER_HOSTS naming two real engines (the main one, and a second
dockerd over TCP with mutual TLS): tenants land by capacity, ``/health`` and ``GET /v1/sandbox`` report the
engines, the second engine's outage answers its tenant 503 SANDBOX_BACKEND_UNAVAILABLE naming it while the
other tenant works, and after its return the tenant is served again. A bad list stops the start."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_support import SecondEngine, halt_engine, resume_engine
from server_process import free_port, openanalyst_command

pytestmark = [pytest.mark.docker, pytest.mark.timeout(400)]
MAIN = "unix:///var/run/docker.sock"
ALICE, BOB = {"X-Tenant-ID": "alice"}, {"X-Tenant-ID": "bob"}


def bash(base: str, tenant: dict[str, str], command: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/tools/bash", headers=tenant, json={"input": {"command": command}}, timeout=90)


def engines(base: str) -> dict[str, dict[str, Any]]:
    """The owner's view (no X-Tenant-ID): every engine with its containers, capacity and error."""
    return {e["url"]: e for e in httpx.get(f"{base}/v1/sandbox", timeout=30).json()["engines"] or []}


def public_engines(base: str) -> dict[str, dict[str, Any]]:
    """The unauthenticated /health: address and state only."""
    return {e["url"]: e for e in httpx.get(f"{base}/health", timeout=10).json()["engines"] or []}


def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)  # poll interval of a readiness check


def test_two_engines_through_the_server(serve: Callable[..., Any], second_engine: SecondEngine,
                                        sandbox_image: str) -> None:
    """Placement, reports, an outage that touches only its tenant, and the return, all over HTTP."""
    remote = second_engine.tcp_url
    server = serve(env={"OPENANALYST_DOCKER_HOSTS": f"{MAIN} capacity=1, {remote} tls={second_engine.client_tls} "
                                                    "capacity=1"})
    base = server.base
    assert bash(base, ALICE, "echo a").json()["output"].strip() == "a"
    assert bash(base, BOB, "echo b").json()["output"].strip() == "b"
    info = httpx.get(f"{base}/v1/sandbox", headers=BOB, timeout=30).json()
    there = second_engine.client()
    try:
        assert [c.id for c in there.containers.list(filters={"label": "openanalyst.tenant=bob"})] == \
            [info["container_id"]]
    finally:
        there.close()
    until(lambda: [(e["state"], e["containers"], e["capacity"]) for e in engines(base).values()]
          == [("up", 1, 1)] * 2, 10, "both engines reported up with one container each")
    assert {e["url"] for e in info["engines"]} == {MAIN, remote}
    # a tenant and /health see addresses and states, not how many containers run or why an engine is down
    assert all((e["containers"], e["capacity"], e["error"]) == (None, None, None) for e in info["engines"])
    assert [(e["state"], e["containers"], e["error"]) for e in public_engines(base).values()] == \
        [("up", None, None)] * 2
    assert info["engine"] == remote
    assert httpx.get(f"{base}/v1/sandbox", headers=ALICE, timeout=30).json()["engine"] == MAIN

    halt_engine(second_engine)

    def bob_refused() -> bool:  # a call in flight as the engine went may answer SANDBOX_DIED first
        answer = bash(base, BOB, "true")
        return answer.status_code == 503 and answer.json()["error"]["code"] == "SANDBOX_BACKEND_UNAVAILABLE"
    until(bob_refused, 60, "bob's calls to be refused")
    refused = bash(base, BOB, "true").json()["error"]
    assert f"engine {remote}" in refused["message"]
    assert bash(base, ALICE, "echo still").json()["output"].strip() == "still"
    until(lambda: engines(base)[remote]["state"] == "down", 10, "the second engine reported down")
    assert engines(base)[MAIN]["state"] == "up" and engines(base)[remote]["error"]
    assert public_engines(base)[remote]["state"] == "down" and public_engines(base)[remote]["error"] is None

    resume_engine(second_engine)
    until(lambda: bash(base, BOB, "echo back").status_code == 200, 60, "bob to be served again")
    assert bash(base, BOB, "echo back").json()["output"].strip() == "back"
    until(lambda: public_engines(base)[remote]["state"] == "up", 10, "the second engine reported up")
    assert server.stop() == 0


def test_a_bad_engine_list_stops_the_start(tmp_path: Path) -> None:
    """A TCP engine without TLS files stops the start with a message naming the entry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENANALYST_")}
    env |= {"OPENANALYST_DATA_DIR": str(tmp_path / "data"), "OPENANALYST_DOCKER_HOSTS": f"{MAIN}, tcp://10.0.0.5"}
    done = subprocess.run([*openanalyst_command(), "--serve", str(free_port())], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "OPENANALYST_DOCKER_HOSTS entry 2 ('tcp://10.0.0.5')" in done.stderr
