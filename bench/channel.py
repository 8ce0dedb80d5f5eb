"""bash ``true`` through ``SandboxManager.call`` (the attached runner channel), for A/B comparisons of runners.

    .venv/bin/python bench/channel.py [--n 200] [--image TAG] [--command true] [--oneshot]

One tenant, one session (``--oneshot``: a new session per call, closed after it untimed, as the server runs a
call outside any session); 20 calls of warm-up, then `n` timed calls; prints one line of JSON (median, p10,
p90 in ms, the median of the runner's own ``duration_ms``, the container's CPU time per call (µs, from its
cgroup: hardly moved by the machine's load), this process's CPU per call, the image, the load average).
The row is the one of ``bench/toolcall.py`` that the speed floor of issue 7 is about, without the rest of
that run, so that two trees (each with its own image and host code) can be measured alternately in the same minutes of a
loaded machine: run it from each tree's directory with ``PYTHONPATH`` set to that tree, in turns. The
container carries ``openanalyst.test=1`` and is removed.
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

try:
    import toolrunner  # noqa: F401  (the tree PYTHONPATH names, when measuring another tree)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.loader import policy_for
from toolrunner.config import SandboxConfig
from toolrunner.docker_backend import DockerBackend
from toolrunner.image import ensure_sandbox_image
from toolrunner.manager import SandboxManager

try:
    from toolrunner.quota import release_all
except ImportError:  # a tree from before workspace quotas

    def release_all(root: Path) -> list[Path]:
        return []


def container_cpu_ns(container_id: str) -> int | None:
    """CPU time the container has used so far (cgroup v1 cpuacct or v2 cpu.stat), None where unreadable.
    CPU per call hardly depends on the machine's load, unlike wall time."""
    for path in (f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage",
                 f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat"):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if text.strip().isdigit():
            return int(text)
        for line in text.splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) * 1000
    return None


async def measure(image: str, n: int, command: str,
                  oneshot: bool = False) -> tuple[list[float], list[float], float | None]:
    """(host-side seconds per call, the runner's own duration_ms per call, container CPU µs per call)."""
    data_dir = Path(tempfile.mkdtemp(prefix="oa-bench-channel-"))
    config = SandboxConfig(data_dir=data_dir, image=image, server_id=f"bench-{uuid.uuid4().hex[:8]}",
                           extra_labels={"openanalyst.test": "1"}, owner_workspace=data_dir / "owner")
    backend = DockerBackend(timeout_s=60)
    policy = policy_for("default")
    manager = SandboxManager(config, lambda _tenant: policy, backend=backend)
    samples: list[float] = []
    inside: list[float] = []
    cpu_us: float | None = None
    try:
        container_id = await manager.ensure_started("bench-channel")
        cpu_before: int | None = None
        for i in range(20 + n):
            if i == 20:
                cpu_before = container_cpu_ns(container_id)
            session = f"oneshot-{i}" if oneshot else "s"
            started = time.perf_counter()
            outcome = await manager.call("bench-channel", session, "bash", {"command": command})
            elapsed = time.perf_counter() - started
            if oneshot:  # as the server does for a call outside any session (untimed: off the response path)
                await manager.close_session("bench-channel", session)
            if outcome.result.error is not None:
                raise RuntimeError(f"bench call failed: {outcome.result.error}")
            if i >= 20:
                samples.append(elapsed)
                inside.append(outcome.result.duration_ms)
        cpu_after = container_cpu_ns(container_id)
        if cpu_before is not None and cpu_after is not None:
            cpu_us = (cpu_after - cpu_before) / n / 1000
    finally:
        await manager.shutdown()
        leftover = [str(c["Id"]) for c in await backend.list_managed(config.instance_id)]
        await asyncio.gather(*(backend.remove(cid) for cid in leftover))
        backend.close()
        release_all(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    return samples, inside, cpu_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--image", help="sandbox image tag (default: build or reuse this tree's)")
    parser.add_argument("--command", default="true")
    parser.add_argument("--oneshot", action="store_true",
                        help="a session per call, closed after it (the server's call outside any session)")
    args = parser.parse_args()
    if args.image:
        image = args.image
    else:
        import docker

        client = docker.from_env()
        try:
            image = ensure_sandbox_image(client, lambda line: print(line, file=sys.stderr))
        finally:
            client.close()
    host_cpu = time.process_time()
    host, inside, cpu_us = asyncio.run(measure(image, args.n, args.command, args.oneshot))
    host_cpu_us = (time.process_time() - host_cpu) / (args.n + 20) * 1e6
    samples = sorted(s * 1000 for s in host)
    k = len(samples) // 10
    print(json.dumps({"image": image, "oneshot": args.oneshot, "n": len(samples),
                      "median_ms": round(statistics.median(samples), 3),
                      "p10_ms": round(samples[k], 3), "p90_ms": round(samples[-1 - k], 3),
                      "runner_median_ms": round(statistics.median(inside), 3),
                      "container_cpu_us_per_call": None if cpu_us is None else round(cpu_us),
                      "host_cpu_us_per_call": round(host_cpu_us), "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
