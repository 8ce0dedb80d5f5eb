"""Tool-call latency and density, measured in one run against the real engine; prints one table.

    .venv/bin/python bench/toolcall.py [--n 300] [--tenants 20] [--calls 50] [--no-api] [--image TAG]

Rows: host ``subprocess.run(["true"])`` (the baseline), bash ``true`` through ``SandboxManager.call`` (the
attached runner channel), docker-py ``exec_run(["true"])`` on the same container, a new tenant's first call
cold and with the start hidden by ``prestart``, N tenants x M concurrent calls, idle memory per container, and
(unless ``--no-api``) ``POST /v1/tools/bash`` through ``openanalyst --serve`` started as a subprocess.
Every container carries ``openanalyst.test=1`` and a bench-only server id, and is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.loader import policy_for
from policies.model import Policy
from toolrunner.config import SandboxConfig
from toolrunner.docker_backend import DockerBackend
from toolrunner.manager import SandboxManager
from toolrunner.quota import release_all

ROWS: list[tuple[str, str, str, str, str]] = []


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, samples_s: list[float], note: str = "") -> None:
    ms = [s * 1000 for s in samples_s]
    ROWS.append((name, str(len(ms)), f"{statistics.median(ms):.3f}", f"{pct(ms, 0.99):.3f}", note))
    print(f"  {name}: median {statistics.median(ms):.3f} ms", file=sys.stderr)


def note_row(name: str, value: str, note: str = "") -> None:
    ROWS.append((name, "", value, "", note))
    print(f"  {name}: {value} {note}", file=sys.stderr)


def host_true(n: int) -> None:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["true"], check=True)
        samples.append(time.perf_counter() - t)
    row("host subprocess.run(['true'])", samples, "baseline")


async def timed_call(manager: SandboxManager, tenant: str, command: str = "true") -> float:
    t = time.perf_counter()
    outcome = await manager.call(tenant, "s", "bash", {"command": command})
    elapsed = time.perf_counter() - t
    if outcome.result.error is not None:
        raise RuntimeError(f"bench call failed: {outcome.result.error}")
    return elapsed


async def latency(manager: SandboxManager, n: int) -> None:
    tenant = "bench-lat"
    await manager.ensure_started(tenant)
    for _ in range(20):
        await timed_call(manager, tenant)
    row("SandboxManager.call bash true", [await timed_call(manager, tenant) for _ in range(n)],
        "attached runner channel")
    read = []
    for _ in range(n):
        t = time.perf_counter()
        await manager.call(tenant, "s", "read_file", {"path": "."})
        read.append(time.perf_counter() - t)
    row("SandboxManager.call read_file", read, "no process spawned")
    container_id = await manager.ensure_started(tenant)
    samples = []
    for _ in range(max(20, n // 5)):
        t = time.perf_counter()
        await manager.backend.exec_run(container_id, ["true"])
        samples.append(time.perf_counter() - t)
    row("docker-py exec_run(['true'])", samples, "same container")


async def cold_and_hidden(manager: SandboxManager, rounds: int) -> None:
    cold, hidden = [], []
    for i in range(rounds):
        cold.append(await timed_call(manager, f"bench-cold-{i}"))
        tenant = f"bench-warm-{i}"
        await manager.prestart(tenant)
        await manager.ensure_started(tenant)  # stands in for the model still talking
        hidden.append(await timed_call(manager, tenant))
    row("first call, cold (create+start+hello)", cold, "new tenant, no container")
    row("first call after prestart", hidden, "start hidden")


async def density(manager: SandboxManager, tenants: int, calls: int) -> list[str]:
    names = [f"bench-t{i}" for i in range(tenants)]
    t = time.perf_counter()
    for name in names:
        await manager.ensure_started(name)
    per_container_ms = (time.perf_counter() - t) / tenants * 1000
    note_row(f"start {tenants} containers sequentially", f"{per_container_ms:.0f} ms", "per container")
    t = time.perf_counter()
    samples = await asyncio.gather(*(timed_call(manager, n) for n in names for _ in range(calls)))
    wall = time.perf_counter() - t
    row(f"{tenants} tenants x {calls} concurrent bash true", list(samples),
        f"{len(samples) / wall:.0f} calls/s")
    return names


async def idle_memory(manager: SandboxManager, names: list[str]) -> None:
    await asyncio.sleep(2)  # let the runners settle before sampling (measurement, not synchronisation)
    usage, rss, ids = [], [], []
    for name in names:
        info = await manager.info(name)
        usage.append((info["usage"] or {}).get("memory_bytes") or 0)
        rss.append((info["usage"] or {}).get("memory_rss_bytes") or 0)
        ids.append(info["container_id"])
    note_row("idle memory per container", f"{statistics.median(usage) / 2**20:.1f} MB",
             f"median of {len(usage)}; cgroup usage minus inactive file cache, as `docker stats`")
    note_row("idle anonymous (rss) memory per container", f"{statistics.median(rss) / 2**20:.1f} MB",
             "cgroup total_rss")
    try:
        import psutil
        shims = [p for p in psutil.process_iter(["cmdline"])
                 if "containerd-shim" in " ".join(p.info["cmdline"] or [])
                 and any(cid in " ".join(p.info["cmdline"] or []) for cid in ids)]
        if shims:
            shim_rss = statistics.median(p.memory_info().rss for p in shims)
            note_row("host RSS per containerd-shim", f"{shim_rss / 2**20:.1f} MB",
                     f"median of {len(shims)} shims of these containers")
    except Exception as exc:  # the shim figure is optional
        note_row("host RSS per containerd-shim", "n/a", str(exc)[:60])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_row(n: int, image: str) -> None:
    """POST /v1/tools/bash through the real server process (needs the integrator's route)."""
    import httpx

    exe = shutil.which("openanalyst") or str(Path(sys.executable).with_name("openanalyst"))
    port, data_dir = free_port(), tempfile.mkdtemp(prefix="oa-bench-api-")
    owner_dir = tempfile.mkdtemp(prefix="oa-bench-owner-")  # not the cwd: a root-owned cwd gets a nosuid guard
    env = {**os.environ, "OPENANALYST_DATA_DIR": data_dir, "OPENANALYST_OWNER_WORKSPACE": owner_dir,
           "OPENANALYST_SANDBOX_LABELS": '{"openanalyst.test": "1"}'}
    proc = subprocess.Popen([exe, "--serve", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/health").status_code < 500:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    note_row("POST /v1/tools/bash true", "n/a", "server did not come up")
                    return
                time.sleep(0.1)
            body = {"input": {"command": "true"}}
            first = client.post("/v1/tools/bash", json=body)
            if first.status_code != 200:
                note_row("POST /v1/tools/bash true", "n/a", f"HTTP {first.status_code}")
                return
            session_id = client.post("/sessions").json()["session_id"]
            in_session = {**body, "session_id": session_id}
            client.post("/v1/tools/bash", json=in_session).raise_for_status()
            for label, payload, note in (
                    ("POST /v1/tools/bash true, in a session", in_session, "HTTP API, the session's shell"),
                    ("POST /v1/tools/bash true, no session", body, "HTTP API, a fresh shell per call")):
                samples = []
                for _ in range(n):
                    t = time.perf_counter()
                    client.post("/v1/tools/bash", json=payload).raise_for_status()
                    samples.append(time.perf_counter() - t)
                row(label, samples, note)
            api_load_row(base, in_session=True)
            api_load_row(base, in_session=False)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        asyncio.run(remove_server_containers(SandboxConfig(data_dir=Path(data_dir), image=image)))
        for made in (data_dir, owner_dir):
            release_all(Path(made))  # quota mounts and the owner's nosuid guard, before the files go
            shutil.rmtree(made, ignore_errors=True)


def api_load_row(base: str, tenants: int = 20, calls: int = 50, *, in_session: bool = True) -> None:
    """20 tenants x 50 concurrent bash calls through HTTP (in one session per tenant, as an agent calls, or
    each in a fresh shell); every request answered must leave a `finished` audit record."""
    import httpx

    requests = 0

    async def run() -> tuple[list[float], float, int]:
        nonlocal requests
        limits = httpx.Limits(max_connections=tenants * calls)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
            bodies = []
            for t in range(tenants):  # start the containers first: this row measures calls, not starts
                headers = {"X-Tenant-ID": f"load{t}{'s' if in_session else ''}"}
                body: dict[str, Any] = {"input": {"command": "true"}}
                if in_session:
                    body["session_id"] = (await client.post("/sessions", headers=headers)).json()["session_id"]
                await client.post("/v1/tools/bash", json=body, headers=headers)
                bodies.append((headers, body))

            async def one(t: int) -> float:
                start = time.perf_counter()
                nonlocal requests
                while True:
                    requests += 1
                    answer = await client.post("/v1/tools/bash", json=bodies[t][1], headers=bodies[t][0])
                    if answer.status_code != 429:  # over the per-tenant cap: retry as a client would
                        answer.raise_for_status()
                        return time.perf_counter() - start
                    await asyncio.sleep(float(answer.headers.get("Retry-After", "1")) / 100)

            wall = time.perf_counter()
            samples = await asyncio.gather(*(one(t) for t in range(tenants) for _ in range(calls)))
            wall = time.perf_counter() - wall
            records = 0
            for t in range(tenants):
                page = await client.get("/v1/audit", params={"phase": "finished", "per_page": 1},
                                        headers=bodies[t][0])
                records += page.json()["meta"]["total"]
            return list(samples), wall, records

    samples, wall, records = asyncio.run(run())
    made = requests + tenants  # every request answered, 429 refusals included, leaves a finished record
    how = "in a session each" if in_session else "no session"
    row(f"HTTP {tenants} tenants x {calls} concurrent bash, {how}", samples,
        f"{len(samples) / wall:.0f} calls/s; {requests - len(samples)} 429s retried; "
        f"finished audit records {records} = requests {made}: {records == made}")


async def remove_server_containers(config: SandboxConfig) -> None:
    """The API server leaves its containers running for adoption; the bench removes them."""
    backend = DockerBackend(timeout_s=60)
    try:
        for container in await backend.list_managed(config.instance_id):
            await backend.remove(str(container["Id"]))
    finally:
        backend.close()


def resolve_image(given: str | None) -> str:
    if given:
        return given
    import docker

    from toolrunner.image import ensure_sandbox_image
    client = docker.from_env(timeout=60)
    try:
        return str(ensure_sandbox_image(client, lambda line: print(line, file=sys.stderr)))
    finally:
        client.close()


async def main_async(args: argparse.Namespace, image: str) -> None:
    base = policy_for("default")
    policy = Policy.model_validate({**base.model_dump(), "name": "bench", "max_concurrent_calls": 256})
    data_dir = Path(tempfile.mkdtemp(prefix="oa-bench-"))
    config = SandboxConfig(data_dir=data_dir, image=image, server_id=f"bench-{uuid.uuid4().hex[:8]}",
                           extra_labels={"openanalyst.test": "1"}, owner_workspace=data_dir / "owner")
    backend = DockerBackend(timeout_s=60)
    manager = SandboxManager(config, lambda _tenant: policy, backend=backend)
    try:
        await latency(manager, args.n)
        await cold_and_hidden(manager, args.rounds)
        names = await density(manager, args.tenants, args.calls)
        await idle_memory(manager, names)
    finally:
        await manager.shutdown()
        for container in await backend.list_managed(config.instance_id):
            await backend.remove(str(container["Id"]))
        backend.close()
        release_all(data_dir)  # the tenants' quota filesystems, before their files go
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="samples per latency row")
    parser.add_argument("--rounds", type=int, default=5, help="new tenants for the cold/prestart rows")
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--calls", type=int, default=50, help="concurrent calls per tenant")
    parser.add_argument("--no-api", dest="api", action="store_false",
                        help="skip POST /v1/tools/bash through a server process")
    parser.add_argument("--image", help="sandbox image tag (default: build or reuse the current one)")
    args = parser.parse_args()
    image = resolve_image(args.image)
    host_true(args.n)
    asyncio.run(main_async(args, image))
    if args.api:
        api_row(args.n, image)
    widths = [max(len(r[i]) for r in [*ROWS, ("what", "n", "median ms", "p99 ms", "note")]) for i in range(5)]
    header = ("what", "n", "median ms", "p99 ms", "note")
    for line in (header, tuple("-" * w for w in widths), *ROWS):
        print(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
