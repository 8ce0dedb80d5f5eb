"""What the live-container cap costs a tenant, measured against the real engine; prints medians in ms.

    .venv/bin/python bench/sandbox_capacity.py [--n 5] [--image TAG]

With a cap of one tenant container: a new tenant's first call (cold), a new tenant's first call that must
first stop the idle container of another (evict + create), a tenant's call that evicts another and restarts
its own stopped container (evict + restart), a warm call, and a call refused at once because the only
container is busy (SANDBOX_CAPACITY). Containers carry ``openanalyst.test=1`` and a bench-only server id and
are removed at the end; the data directory is deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.loader import policy_for
from toolrunner.config import SandboxConfig
from toolrunner.docker_backend import DockerBackend
from toolrunner.errors import SandboxCapacity
from toolrunner.image import image_tag
from toolrunner.manager import SandboxManager
from toolrunner.quota import release_all


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await fn()
    return (time.perf_counter() - started) * 1000


async def bench(image: str, n: int) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="oa-capacity-bench-"))
    (data / "owner").mkdir()
    config = SandboxConfig(data_dir=data, image=image, owner_workspace=data / "owner",
                           server_id=f"bench-{uuid.uuid4().hex[:8]}", extra_labels={"openanalyst.test": "1"},
                           max_live_containers=1, max_stopped_containers=2 * n + 2)
    backend = DockerBackend(timeout_s=60)
    manager = SandboxManager(config, lambda _tenant: policy_for("ci"), backend=backend)

    def call(tenant: str) -> Callable[[], Awaitable[Any]]:
        return lambda: manager.call(tenant, "s", "bash", {"command": "true"})

    rows: dict[str, list[float]] = {"cold": [], "evict + create": [], "evict + restart": [], "warm": [],
                                    "refused (SANDBOX_CAPACITY)": []}
    try:
        rows["cold"].append(await timed(call("t0")))
        for i in range(1, n + 1):
            rows["evict + create"].append(await timed(call(f"t{i}")))
            rows["warm"].append(await timed(call(f"t{i}")))
        for i in range(n):
            rows["evict + restart"].append(await timed(call(f"t{i}")))
        busy = asyncio.ensure_future(manager.call("busy", "s", "bash", {"command": "sleep 5"}))
        while (await manager.info("busy"))["state"] != "running":  # its call is in flight from the start
            await asyncio.sleep(0.05)
        for _ in range(n):
            started = time.perf_counter()
            try:
                await call("other")()
            except SandboxCapacity:
                rows["refused (SANDBOX_CAPACITY)"].append((time.perf_counter() - started) * 1000)
        await busy
    finally:
        await manager.shutdown()
        for row in await backend.list_managed(config.instance_id):  # one at a time: the engine's removal bug
            await backend.remove(str(row["Id"]))
        backend.close()
        release_all(data)
        shutil.rmtree(data, ignore_errors=True)
    return {name: round(statistics.median(values), 2) for name, values in rows.items() if values}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="samples per row")
    parser.add_argument("--image", default=None, help="sandbox image tag (default: the current sources' tag)")
    args = parser.parse_args()
    medians = asyncio.run(bench(args.image or image_tag(), args.n))
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, n={args.n}, cap 1, policy ci")
    for name, ms in medians.items():
        print(f"{name:<28} {ms:>9.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
