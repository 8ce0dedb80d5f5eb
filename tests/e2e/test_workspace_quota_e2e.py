"""Workspace quotas through the real server process: a tenant under a small quota is stopped at the limit with
``limit: "disk"`` over HTTP and recovers after deleting; ``GET /v1/sandbox`` shows the quota; a restarted
server finds the mount instead of stacking another; ``DELETE /v1/sandbox`` unmounts and frees the loop device."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from toolrunner.mounts import mounts

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]

POLICY = """
name = "smalldisk"
cpus = 0.5
memory_mb = 256
pids = 128
tmpfs_mb = 16
nofile = 256
fsize_mb = 64
default_timeout_s = 20
max_timeout_s = 60
output_cap_bytes = 8192
max_concurrent_calls = 4
disk_mb = 32
disk_inodes = 2048
"""
DORA = {"X-Tenant-ID": "dora"}


def bash(base: str, command: str) -> dict[str, Any]:
    response = httpx.post(f"{base}/v1/tools/bash", headers=DORA, json={"input": {"command": command}}, timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def loops_of(image: Path) -> list[str]:
    out = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True).stdout
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


def loops_gone(image: Path, within_s: float = 10) -> bool:
    """No loop device on ``image``, polled against a deadline (the kernel frees a device that a dying
    container's mount namespace still held asynchronously)."""
    deadline = time.monotonic() + within_s
    while loops_of(image) and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval against the deadline
    return loops_of(image) == []


def test_quota_over_http_restart_and_removal(serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> None:
    """Fill, get limit "disk", delete, write again; the quota in GET /v1/sandbox; restart: one mount; DELETE:
    no mount, no loop device, the files kept in the image for the next call."""
    policy = tmp_path / "smalldisk.toml"
    policy.write_text(POLICY)
    data_dir = tmp_path / "data"
    env = {"OPENANALYST_TENANT_POLICIES": json.dumps({"dora": str(policy)}),
           "OPENANALYST_SANDBOX_LABELS": json.dumps({"openanalyst.test": "1"})}
    server = serve(env=env, data_dir=data_dir)
    full = bash(server.base, "echo keep > keep.txt; dd if=/dev/zero of=big bs=1M count=64 2>&1")
    assert full["limit"] == "disk" and "No space left" in full["output"], full
    quota = httpx.get(f"{server.base}/v1/sandbox", headers=DORA, timeout=30).json()["workspace"]["quota"]
    assert quota["enforced"] is True and quota["bytes"] <= 32 * 1024 * 1024 and quota["inodes"] >= 2048
    assert quota["free_bytes"] < 2 * 1024 * 1024 and quota["used_bytes"] > 20 * 1024 * 1024
    again = bash(server.base, "rm big && dd if=/dev/zero of=ok bs=1M count=4 2>&1 | tail -1")
    assert again["limit"] is None and again["exit_code"] == 0, again

    workspace, image = data_dir / "workspaces" / "dora", data_dir / "quota" / "dora.ext4"
    assert server.stop() == 0
    restarted = serve(env=env, data_dir=data_dir)
    assert bash(restarted.base, "cat keep.txt")["output"] == "keep\n"
    assert sum(1 for m in mounts() if m.point == workspace) == 1 and len(loops_of(image)) == 1

    assert httpx.delete(f"{restarted.base}/v1/sandbox", headers=DORA, timeout=60).status_code == 204
    assert not any(m.point == workspace for m in mounts()) and loops_gone(image)
    info = httpx.get(f"{restarted.base}/v1/sandbox", headers=DORA, timeout=30).json()
    assert info["state"] == "absent" and info["workspace"]["quota"]["enforced"] is False
    assert bash(restarted.base, "cat keep.txt")["output"] == "keep\n"  # mounted again, files intact
