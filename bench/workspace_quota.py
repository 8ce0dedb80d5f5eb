"""What the workspace quota (a loop-mounted ext4 image per workspace) costs; prints one table.

    .venv/bin/python bench/workspace_quota.py [--n 300] [--mb 256] [--image TAG] [--no-discard]

Rows: mounting a fresh quota filesystem at first use (mkfs + mount, the default policy's 2 GiB / 131,072
inodes), finding it mounted again (a restarted server), unmounting; the image's real disk use; sequential
write throughput and small-file creation inside the sandbox, quota tenant vs plain bind mount; and the
median of a ``bash true`` tool call with the quota (one statvfs per call) vs without; deleting the written
files (``rm`` + ``sync``) and what the image then still takes on the host (``--no-discard`` mounts without
``discard`` to compare). Needs root and Docker;
everything it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.loader import policy_for
from policies.model import Policy
from toolrunner import quota as quota_module
from toolrunner.config import SandboxConfig
from toolrunner.docker_backend import DockerBackend
from toolrunner.manager import SandboxManager
from toolrunner.quota import LoopQuota, mark_disk_limit, release_all, spec_for

ROWS: list[tuple[str, str, str]] = []


def note(name: str, value: str, detail: str = "") -> None:
    ROWS.append((name, value, detail))
    print(f"  {name}: {value} {detail}", file=sys.stderr)


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.2f} ms"


def mount_costs(root: Path, rounds: int = 10) -> None:
    spec = spec_for(2048, 131072)
    assert spec is not None
    fresh, again, release = [], [], []
    for i in range(rounds):
        ws = root / f"ws{i}"
        ws.mkdir(parents=True)
        quota = LoopQuota(root / "quota" / f"t{i}.ext4", ws)
        t = time.perf_counter()
        assert quota.ensure(spec).enforced
        fresh.append(time.perf_counter() - t)
        t = time.perf_counter()
        quota.ensure(spec)
        again.append(time.perf_counter() - t)
    time.sleep(5)  # let ext4lazyinit run before measuring the image's real size
    used = [(root / "quota" / f"t{i}.ext4").stat().st_blocks * 512 for i in range(rounds)]
    for i in range(rounds):
        quota = LoopQuota(root / "quota" / f"t{i}.ext4", root / f"ws{i}")
        t = time.perf_counter()
        quota.release()
        release.append(time.perf_counter() - t)
    note("mount at first use (mkfs.ext4 + mount), 2 GiB / 131,072 inodes", ms(fresh), f"median of {rounds}")
    note("find it mounted (restart: reuse, no stacking)", ms(again), "mountinfo + /sys lookup")
    note("unmount (loop device freed)", ms(release), "")
    note("image's real disk use when empty", f"{statistics.median(used) / 2**20:.1f} MiB",
         "sparse file, 2 GiB apparent")


async def in_sandbox(manager: SandboxManager, n: int, mb: int) -> None:
    tenants = {"quota": "bq", "plain bind": "bp"}
    for tenant in tenants.values():
        await manager.ensure_started(tenant)
    fresh: dict[str, list[float]] = {k: [] for k in tenants}
    rewrite: dict[str, list[float]] = {k: [] for k in tenants}
    files: dict[str, list[float]] = {k: [] for k in tenants}

    async def dd(tenant: str, target: str, flags: str) -> float:
        out = await manager.call(tenant, "s", "bash", {
            "command": f"dd if=/dev/zero of={target} bs=1M count={mb} conv={flags} 2>&1 | tail -1"})
        found = re.search(r"([\d.]+) ([MG])B/s", out.result.output)
        if not found:
            raise RuntimeError(out.result.output)
        return float(found.group(1)) * (1000 if found.group(2) == "G" else 1)

    for i in range(3):
        for label, tenant in tenants.items():
            fresh[label].append(await dd(tenant, f"new{i}", "fsync"))
            rewrite[label].append(await dd(tenant, "new0", "notrunc,fsync"))
            t = time.perf_counter()
            await manager.call(tenant, "s", "bash", {
                "command": "mkdir -p d && cd d && for i in $(seq 1 5000); do : > f$i; done && cd .. && rm -rf d"})
            files[label].append(time.perf_counter() - t)
    delete: dict[str, float] = {}
    for label, tenant in tenants.items():
        t = time.perf_counter()
        await manager.call(tenant, "s", "bash", {"command": "rm -f new* && sync"})
        delete[label] = time.perf_counter() - t
    image = manager.config.data_dir.resolve() / "quota" / "bq.ext4"
    deadline = time.monotonic() + 10
    while image.stat().st_blocks * 512 > 64 * 2**20 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # a discard lands when the journal commits
    for label in tenants:
        note(f"rm the 3 x {mb} MiB files + sync, {label}", f"{delete[label] * 1000:.0f} ms", "one call")
    note("quota image's host disk use after the delete", f"{image.stat().st_blocks * 512 / 2**20:.0f} MiB",
         f"mount options {quota_module.MOUNT_OPTIONS}")
    for label in tenants:
        note(f"dd {mb} MiB new file, fsync, {label}", f"{statistics.median(fresh[label]):.0f} MB/s",
             "median of 3; blocks allocated on the host disk at first touch")
        note(f"dd {mb} MiB overwrite in place, fsync, {label}", f"{statistics.median(rewrite[label]):.0f} MB/s",
             "median of 3")
        note(f"create + delete 5,000 empty files (bash), {label}", ms(files[label]), "median of 3")
    samples: dict[str, list[float]] = {k: [] for k in tenants}
    for _ in range(20):
        for tenant in tenants.values():
            await manager.call(tenant, "s", "bash", {"command": "true"})
    for _ in range(n):
        for label, tenant in tenants.items():
            t = time.perf_counter()
            await manager.call(tenant, "s", "bash", {"command": "true"})
            samples[label].append(time.perf_counter() - t)
    for label in tenants:
        note(f"SandboxManager.call bash true, {label}", ms(samples[label]), f"n={n}, interleaved")
    quota, plain = statistics.median(samples["quota"]), statistics.median(samples["plain bind"])
    note("quota cost on the tool-call median", f"{(quota - plain) / plain * 100:+.1f} %", "")
    plan = manager._plans["bq"]  # the host's own per-call work: one statvfs of the mount
    result = (await manager.call("bq", "s", "bash", {"command": "true"})).result
    t = time.perf_counter()
    for _ in range(10_000):
        mark_disk_limit(plan.quota, result, {"command": "true"})
    note("host check per call (mark_disk_limit)", f"{(time.perf_counter() - t) / 10_000 * 1e6:.1f} us",
         "statvfs; a syncfs only when it looks full")


async def main_async(args: argparse.Namespace, image: str) -> None:
    base = policy_for("default")
    with_quota = Policy.model_validate({**base.model_dump(), "name": "bench-quota"})
    plain = Policy.model_validate({**base.model_dump(), "name": "bench-plain", "disk_mb": None, "disk_inodes": None})
    data_dir = Path(tempfile.mkdtemp(prefix="oa-bench-quota-"))
    config = SandboxConfig(data_dir=data_dir, image=image, server_id=f"bench-{uuid.uuid4().hex[:8]}",
                           extra_labels={"openanalyst.test": "1"}, owner_workspace=data_dir / "owner")
    backend = DockerBackend(timeout_s=60)
    manager = SandboxManager(config, lambda tenant: with_quota if tenant == "bq" else plain, backend=backend)
    try:
        mount_costs(data_dir / "mounts")
        await in_sandbox(manager, args.n, args.mb)
    finally:
        await manager.shutdown()
        for container in await backend.list_managed(config.instance_id):
            await backend.remove(str(container["Id"]))
        backend.close()
        release_all(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="samples per tool-call row")
    parser.add_argument("--mb", type=int, default=256, help="size of the dd write")
    parser.add_argument("--image", help="sandbox image tag (default: build or reuse the current one)")
    parser.add_argument("--no-discard", action="store_true", help="mount the images without discard (compare)")
    args = parser.parse_args()
    if args.no_discard:
        quota_module.MOUNT_OPTIONS = ",".join(o for o in quota_module.MOUNT_OPTIONS.split(",") if o != "discard")
    if os.geteuid() != 0:
        raise SystemExit("needs root (loop mounts)")
    import docker

    from toolrunner.image import ensure_sandbox_image
    client = docker.from_env(timeout=60)
    try:
        image = args.image or str(ensure_sandbox_image(client, lambda line: print(line, file=sys.stderr)))
    finally:
        client.close()
    print(f"load before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", file=sys.stderr)
    asyncio.run(main_async(args, image))
    print(f"load after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    widths = [max(len(r[i]) for r in [*ROWS, ("what", "value", "note")]) for i in range(3)]
    for line in (("what", "value", "note"), tuple("-" * w for w in widths), *ROWS):
        print(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
