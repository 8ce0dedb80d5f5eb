"""Red-team findings 4(a) and 5 through the real server process: an evicted tenant learns it (GET /v1/sandbox
``last_stop``, SESSION_STATE_LOST on its session's next stateful call, audited), another tenant's background
job survives the eviction, and a new tenant's workspace is refused with 503 SANDBOX_DISK_FULL when the data
disk's reserve would be eaten."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


def tool(server: Any, tenant: str, name: str, input: dict[str, Any], *,
         session_id: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"input": input, **({"session_id": session_id} if session_id else {})}
    return httpx.post(f"{server.base}/v1/tools/{name}", json=body, headers={"X-Tenant-ID": tenant}, timeout=60)


def session(server: Any, tenant: str) -> str:
    return str(httpx.post(f"{server.base}/sessions", headers={"X-Tenant-ID": tenant}, timeout=30).json()["session_id"])


def sandbox(server: Any, tenant: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.base}/v1/sandbox", headers={"X-Tenant-ID": tenant}, timeout=60)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_an_evicted_session_is_told_and_a_background_job_is_spared(
        serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> None:
    """Cap 2: ann (first, so least recently used) runs a background job, ben has shell state; cat's first
    call stops ben's container, not ann's. ben's GET /v1/sandbox says evicted and when; ben's next bash in its
    session answers 200 with SESSION_STATE_LOST (not run), audited; the call after runs; ann's job ticks on."""
    server = serve(env={"OPENANALYST_SANDBOX_MAX_CONTAINERS": "2"}, data_dir=tmp_path / "data")
    s_ann, s_ben = session(server, "ann"), session(server, "ben")
    job = tool(server, "ann", "bash", {"command": "while :; do echo tick; sleep 0.2; done",
                                        "run_in_background": True}, session_id=s_ann).json()
    assert job["error"] is None, job
    token = job["output"].split("background with id ", 1)[1].split()[0]
    assert tool(server, "ben", "bash", {"command": "cd /tmp && export KEPT=yes"}, session_id=s_ben).json()[
        "exit_code"] == 0
    assert tool(server, "cat", "bash", {"command": "echo in"}).json()["output"] == "in\n"

    assert sandbox(server, "ann")["state"] == "running" and sandbox(server, "ann")["last_stop"] is None
    ben = sandbox(server, "ben")
    assert ben["state"] == "stopped", ben
    stop = ben["last_stop"]
    assert stop["reason"] == "evicted" and "make room" in stop["message"] and stop["sessions"] == 1, stop
    assert stop["held"]["background"] == 0 and stop["at"].endswith("Z"), stop

    lost = tool(server, "ben", "bash", {"command": "pwd"}, session_id=s_ben)
    assert lost.status_code == 200 and lost.json()["error"]["code"] == "SESSION_STATE_LOST", lost.text
    after = tool(server, "ben", "bash", {"command": "echo \"[$KEPT]\""}, session_id=s_ben).json()
    assert after["error"] is None and after["output"] == "[]\n", after
    ticks = tool(server, "ann", "bash_output", {"id": token}, session_id=s_ann).json()
    assert ticks["error"] is None and "tick" in ticks["output"], ticks
    audit = httpx.get(f"{server.base}/v1/audit", params={"tool": "bash", "phase": "finished"},
                      headers={"X-Tenant-ID": "ben"}, timeout=30).json()["data"]
    assert "SESSION_STATE_LOST" in [r["error_code"] for r in audit], audit


def test_a_new_tenant_is_refused_with_503_when_the_disk_reserve_would_be_eaten(
        serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> None:
    """A reserve larger than the disk: a new tenant's first call is 503 SANDBOX_DISK_FULL in the one error
    shape and makes no image; the owner (exempt from the quota) still works."""
    data_dir = tmp_path / "data"
    server = serve(env={"OPENANALYST_DATA_DISK_RESERVE_MB": str(1 << 30)}, data_dir=data_dir)
    refused = tool(server, "dan", "bash", {"command": "true"})
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "SANDBOX_DISK_FULL" and error["status"] == 503 and "reserve" in error["message"]
    assert not (data_dir / "quota" / "dan.ext4").exists()
    owner = httpx.post(f"{server.base}/v1/tools/bash", json={"input": {"command": "echo mine"}}, timeout=60)
    assert owner.json()["output"] == "mine\n", owner.text


def test_a_server_restarted_inside_the_owner_workspace_can_lift_its_guard(
        serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> None:
    """`cd project && openanalyst --serve` as root (the owner's workspace is the start directory, given here as
    the relative "."), then a restart from the same directory: the guard outlived the first server, so the
    second one's start directory is *on* the guard; it leaves it once its paths are resolved, so DELETE
    /v1/sandbox lifts the guard and strips the set-id bit (red team 8: "target is busy", never stripped)."""
    import stat

    from toolrunner.mounts import mounted_at

    project = tmp_path / "project"
    project.mkdir(mode=0o755)
    env = {"OPENANALYST_OWNER_WORKSPACE": "."}
    first = serve(env=env, data_dir=tmp_path / "data", cwd=project)
    made = httpx.post(f"{first.base}/v1/tools/bash", timeout=60, json={"input": {
        "command": "cp /bin/true rootshell && chmod 4755 rootshell && stat -c %a rootshell"}}).json()
    assert made["output"].strip() == "4755", made
    assert mounted_at(project) is not None  # the guard, made for the root-owned start directory
    assert first.stop() == 0

    second = serve(env=env, data_dir=tmp_path / "data", cwd=project)
    assert httpx.get(f"{second.base}/v1/sandbox", timeout=60).json()["workspace"]["nosuid"] is True
    assert httpx.delete(f"{second.base}/v1/sandbox", timeout=60).status_code == 204
    assert mounted_at(project) is None
    assert not (project / "rootshell").stat().st_mode & stat.S_ISUID
