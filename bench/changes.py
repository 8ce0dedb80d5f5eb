"""What the change report per tool call costs on a workspace of 10,000 files; prints one table.

    .venv/bin/python bench/changes.py [--n 200] [--files 10000] [--image TAG]

Two tenants of the default policy (quota filesystem included), each with ``--files`` files in 100
directories; one with reports on (``ChangeTracker.around``, as the dispatcher calls it, with the real audit
log), one with them off (the baseline, same run, calls interleaved). Rows: the median and p90 of a ``bash``
call that changes nothing and of one that rewrites one file, with and without the report; the hook's own time
(``around`` minus the call it wraps); building the watch at a tenant's first call (watches on
every directory, every file indexed and hashed); and for comparison a stat walk of the same tree (what a
report without inotify would cost per call, twice). Needs root and Docker; everything it makes is removed.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.loader import policy_for
from policies.model import Policy
from server.audit.log import AuditLog
from server.changes.tracker import ChangeTracker
from server.changes.watch import WorkspaceWatch
from server.tools.context import ToolContext
from toolrunner.config import SandboxConfig, workspace_path
from toolrunner.docker_backend import DockerBackend
from toolrunner.manager import CallOutcome, SandboxManager
from toolrunner.quota import release_all

ROWS: list[tuple[str, str, str]] = []
ON, OFF = "bon", "boff"


def note(name: str, value: str, detail: str = "") -> None:
    ROWS.append((name, value, detail))
    print(f"  {name}: {value} {detail}", file=sys.stderr)


def stats(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=10)
    return f"{statistics.median(samples) * 1000:.2f} ms (p90 {q[-1] * 1000:.2f})"


class _Backend:
    """What the tracker needs of the server's sandbox backend: the manager."""

    def __init__(self, manager: SandboxManager) -> None:
        self._manager = manager

    async def manager(self) -> SandboxManager:
        return self._manager


async def populate(manager: SandboxManager, tenant: str, files: int) -> None:
    per = max(1, files // 100)
    cmd = (f"for d in $(seq 0 99); do mkdir -p d$d; for f in $(seq 0 {per - 1}); do echo $d.$f > d$d/f$f.txt; "
           "done; done; find . -type f | wc -l")
    result = (await manager.call(tenant, "setup", "bash", {"command": cmd, "timeout_s": 300}, timeout_s=300)).result
    assert result.exit_code == 0, result


async def measure(manager: SandboxManager, tracker: ChangeTracker, n: int) -> None:
    hook: list[float] = []

    async def call(tenant: str, i: int, command: str) -> float:
        ctx = ToolContext(tenant_id=tenant, session_id="bench", call_id=f"c{i}-{tenant}")
        inner = 0.0

        async def run() -> CallOutcome:
            nonlocal inner
            t = time.perf_counter()
            try:
                return await manager.call(tenant, "bench", "bash", {"command": command})
            finally:
                inner = time.perf_counter() - t

        t = time.perf_counter()
        outcome = await (tracker.around(ctx, "sandbox", run) if tenant == ON else run())
        elapsed = time.perf_counter() - t
        if tenant == ON:
            hook.append(elapsed - inner)
            assert outcome.result.changes is not None
        assert outcome.result.exit_code == 0, outcome.result
        return elapsed

    for kind, command in (("no change", "true"), ("one file rewritten", "echo $RANDOM > d7/f7.txt")):
        for tenant in (ON, OFF):  # warm both (and the watch)
            await call(tenant, -1, command)
        hook.clear()
        on, off = [], []
        for i in range(n):
            on.append(await call(ON, i, command))
            off.append(await call(OFF, i, command))
        note(f"bash call, {kind}: with report", stats(on))
        note(f"bash call, {kind}: without (baseline)", stats(off))
        note(f"bash call, {kind}: added at the median",
             f"{(statistics.median(on) - statistics.median(off)) * 1000:+.2f} ms", "end to end, interleaved")
        note(f"bash call, {kind}: the hook's own work", stats(hook),
             "ChangeTracker.around minus the call inside it")


def build_and_walk(path: Path) -> None:
    times, walks = [], []
    for _ in range(3):
        t = time.perf_counter()
        watch = WorkspaceWatch(path)
        watch.start()
        times.append(time.perf_counter() - t)
        count = len(watch.index)
        watch.close()
        t = time.perf_counter()
        seen = 0
        for root, _dirs, names in os.walk(path):
            for name in names:
                os.lstat(os.path.join(root, name))
                seen += 1
        walks.append(time.perf_counter() - t)
    note("watch built at a tenant's first call", f"{statistics.median(times) * 1000:.0f} ms",
         f"{count} files indexed and hashed, 101 directories watched (median of 3)")
    note("a stat walk of the same tree (the alternative)", f"{statistics.median(walks) * 1000:.1f} ms",
         f"{seen} lstat; needed before and after every call without inotify")


async def main_async(args: argparse.Namespace, image: str) -> None:
    base = policy_for("default")
    on = Policy.model_validate({**base.model_dump(), "name": "bench-on", "change_reports": True})
    off = Policy.model_validate({**base.model_dump(), "name": "bench-off", "change_reports": False})
    data_dir = Path(tempfile.mkdtemp(prefix="oa-bench-changes-"))
    config = SandboxConfig(data_dir=data_dir, image=image, server_id=f"bench-{uuid.uuid4().hex[:8]}",
                           extra_labels={"openanalyst.test": "1"}, owner_workspace=data_dir / "owner")
    backend = DockerBackend(timeout_s=60)

    def policy(tenant: str) -> Policy:
        return on if tenant == ON else off

    manager = SandboxManager(config, policy, backend=backend)
    audit = AuditLog(data_dir / "audit.db")
    await audit.open()
    tracker = ChangeTracker(_Backend(manager), audit, policy)
    try:
        for tenant in (ON, OFF):
            await populate(manager, tenant, args.files)
        build_and_walk(workspace_path(config, ON))
        await measure(manager, tracker, args.n)
    finally:
        await tracker.close()
        await audit.close()
        await manager.shutdown()
        for container in await backend.list_managed(config.instance_id):
            await backend.remove(str(container["Id"]))
        backend.close()
        release_all(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def sandbox_image(tag: str | None) -> str:
    """The image to run: ``tag``, or the current one (built when the engine lacks it)."""
    if tag:
        return tag
    import docker

    from toolrunner.image import ensure_sandbox_image
    client = docker.from_env(timeout=60)
    try:
        return str(ensure_sandbox_image(client, lambda line: print(line, file=sys.stderr)))
    finally:
        client.close()


def print_table(rows: list[tuple[str, str, str]]) -> None:
    header = ("what", "value", "note")
    cols = list(zip(header, *rows, strict=True))
    widths = [max(map(len, col)) for col in cols]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*header))
    print(fmt.format(*("-" * w for w in widths)))
    for row in rows:
        print(fmt.format(*row))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="calls per row (each side)")
    parser.add_argument("--files", type=int, default=10_000, help="files in each workspace")
    parser.add_argument("--image", help="sandbox image tag (default: build or reuse the current one)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (loop mounts)")
    image = sandbox_image(args.image)
    print(f"load before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", file=sys.stderr)
    asyncio.run(main_async(args, image))
    print(f"load after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print_table(ROWS)


if __name__ == "__main__":
    main()
