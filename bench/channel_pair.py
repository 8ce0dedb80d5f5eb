"""bash ``true`` on two runner images at once, calls alternated one by one, for A/B comparisons on a busy machine.

    .venv/bin/python bench/channel_pair.py IMAGE_A IMAGE_B [--n 300] [--oneshot]

`bench/channel.py` runs one tree at a time; on the shared 2-core machine its CPU per call moved by 1.7x
between runs of the same image minutes apart (load average 10-13), more than the changes it was meant to
tell apart. Here one host process (this tree's host code: use it only when the host side of the two trees is
the same) keeps two tenants, each on its own image, and alternates their calls (ABAB, then BABA), so that both
see the same load; each container's CPU per call comes from its own cgroup. Prints one line of JSON per image
pair. Containers carry ``openanalyst.test=1`` and are removed; workspace mounts are released.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.channel import container_cpu_ns
from policies.loader import policy_for
from toolrunner.config import SandboxConfig
from toolrunner.docker_backend import DockerBackend
from toolrunner.manager import SandboxManager
from toolrunner.quota import release_all

WARMUP = 20


async def measure(images: list[str], n: int, oneshot: bool) -> dict[str, dict[str, float]]:
    """Per image: container CPU µs per call, wall median and p10 (ms)."""
    data_dir = Path(tempfile.mkdtemp(prefix="oa-bench-pair-"))
    config = SandboxConfig(data_dir=data_dir, image=images[0], server_id=f"bench-{uuid.uuid4().hex[:8]}",
                           extra_labels={"openanalyst.test": "1"}, owner_workspace=data_dir / "owner")
    backend = DockerBackend(timeout_s=60)
    policy = policy_for("default")
    manager = SandboxManager(config, lambda _tenant: policy, backend=backend)
    pairs = [(f"bench-pair-{i}", image) for i, image in enumerate(images)]
    wall: dict[str, list[float]] = {tenant: [] for tenant, _ in pairs}

    async def one(tenant: str, image: str, session: str) -> float:
        started = time.perf_counter()
        outcome = await manager.call(tenant, session, "bash", {"command": "true"}, image=image)
        elapsed = time.perf_counter() - started
        if outcome.result.error is not None:
            raise RuntimeError(f"bench call failed: {outcome.result.error}")
        if oneshot:  # as the server does for a call outside any session (untimed: off the response path)
            await manager.close_session(tenant, session)
        return elapsed

    try:
        containers: dict[str, str] = {}
        for i in range(WARMUP):
            for tenant, image in pairs:
                await one(tenant, image, f"warm-{i}" if oneshot else "s")
        for tenant, image in pairs:
            outcome = await manager.call(tenant, "s", "bash", {"command": "true"}, image=image)
            assert outcome.container_id is not None
            containers[tenant] = outcome.container_id
        before = {tenant: container_cpu_ns(cid) for tenant, cid in containers.items()}
        for i in range(n):
            for tenant, image in (pairs if i % 2 == 0 else pairs[::-1]):
                wall[tenant].append(await one(tenant, image, f"one-{i}" if oneshot else "s"))
        after = {tenant: container_cpu_ns(cid) for tenant, cid in containers.items()}
    finally:
        await manager.shutdown()
        leftover = [str(c["Id"]) for c in await backend.list_managed(config.instance_id)]
        for cid in leftover:  # one at a time (docs: the engine's removal deadlock)
            await backend.remove(cid)
        backend.close()
        release_all(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    out: dict[str, dict[str, float]] = {}
    for tenant, image in pairs:
        samples = sorted(s * 1000 for s in wall[tenant])
        cpu_before, cpu_after = before[tenant], after[tenant]
        out[image] = {"container_cpu_us_per_call": -1 if cpu_before is None or cpu_after is None
                      else round((cpu_after - cpu_before) / n / 1000),
                      "median_ms": round(statistics.median(samples), 3),
                      "p10_ms": round(samples[len(samples) // 10], 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs=2)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--oneshot", action="store_true",
                        help="a session per call, closed after it (the server's call outside any session)")
    args = parser.parse_args()
    result = asyncio.run(measure(args.images, args.n, args.oneshot))
    print(json.dumps({"oneshot": args.oneshot, "n": args.n, **result, "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
