"""The server's CPU per HTTP tool call, paired: two code trees' servers measured turn about in one run.

    .venv/bin/python bench/http_cpu.py --tree /path/to/before --tree . [--rounds 3] [--n 600] [--load]

Latency on a shared 2-core machine swings 2-3x between minutes; CPU time per call is steadier, and alternating
the trees round by round lets both see the same load. Each round starts ``openanalyst --serve`` from one tree
(``PYTHONPATH`` = the tree, this venv's packages), makes ``--n`` sequential ``bash true`` calls in a session
and without one, and reads the server's CPU per call from ``/proc/<pid>/task/*/stat``: the event-loop thread and
the others (the audit and store writers, mostly). The client's own CPU per call is shown as a check on the
machine's speed in that round. ``--load`` adds 20 tenants x 50 concurrent calls in a session (each tenant a
client of its own). Each tree must have its sandbox image built (``openanalyst sandbox build`` from it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.toolcall import bench_policy_file
from bench.toolcall_api import _remove_containers, free_port
from toolrunner.config import SandboxConfig
from toolrunner.quota import release_all

TENANT = {"X-Tenant-ID": "bench-cpu"}
TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of ``pid``, by thread name and id."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[f"{name}:{tid}"] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def per_call(before: dict[str, float], after: dict[str, float], pid: int, n: int) -> str:
    spent = {k: v - before.get(k, 0.0) for k, v in after.items()}
    loop = next((v for k, v in spent.items() if k.endswith(f":{pid}")), 0.0)  # the main thread runs the loop
    total = sum(spent.values())
    return (f"server ms/call: all {total / n * 1000:.2f}, loop {loop / n * 1000:.2f}, "
            f"other threads {(total - loop) / n * 1000:.2f}")


def sequential(base: str, pid: int, n: int) -> list[str]:
    lines = []
    limits = httpx.Limits(keepalive_expiry=2.0)
    with httpx.Client(base_url=base, timeout=60, headers=TENANT, limits=limits) as client:
        client.post("/v1/tools/bash", json={"input": {"command": "true"}}).raise_for_status()
        session = client.post("/sessions").json()["session_id"]
        for mode, body in (("session", {"input": {"command": "true"}, "session_id": session}),
                           ("no session", {"input": {"command": "true"}})):
            for _ in range(30):
                client.post("/v1/tools/bash", json=body).raise_for_status()
            threads, mine = thread_cpu(pid), time.process_time()
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                client.post("/v1/tools/bash", json=body).raise_for_status()
                samples.append(time.perf_counter() - started)
            spent = per_call(threads, thread_cpu(pid), pid, n)
            lines.append(f"{mode:10} median {statistics.median(samples) * 1000:6.2f} ms | {spent} | client "
                         f"{(time.process_time() - mine) / n * 1000:.2f} ms/call")
    return lines


async def load(base: str, pid: int, tenants: int = 20, calls: int = 50) -> str:
    limits = httpx.Limits(max_connections=calls, keepalive_expiry=2.0)
    clients = [httpx.AsyncClient(base_url=base, timeout=120, limits=limits) for _ in range(tenants)]
    try:
        bodies: list[tuple[dict[str, str], dict[str, Any]]] = []
        for t, client in enumerate(clients):
            headers = {"X-Tenant-ID": f"cpu-load{t}"}
            body = {"input": {"command": "true"},
                    "session_id": (await client.post("/sessions", headers=headers)).json()["session_id"]}
            (await client.post("/v1/tools/bash", json=body, headers=headers)).raise_for_status()
            bodies.append((headers, body))

        async def one(t: int) -> None:
            while (answer := await clients[t].post("/v1/tools/bash", json=bodies[t][1],
                                                   headers=bodies[t][0])).status_code == 429:
                await asyncio.sleep(0.01)
            answer.raise_for_status()

        threads, mine, wall = thread_cpu(pid), time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(t) for t in range(tenants) for _ in range(calls)))
        wall = time.perf_counter() - wall
        n = tenants * calls
        return (f"load       {n / wall:6.0f} calls/s | {per_call(threads, thread_cpu(pid), pid, n)} | client "
                f"{(time.process_time() - mine) / n * 1000:.2f} ms/call")
    finally:
        for client in clients:
            await client.aclose()


def one_round(tree: Path, args: argparse.Namespace, policy: Path) -> list[str]:
    port, data_dir, owner = free_port(), tempfile.mkdtemp(prefix="oa-cpu-"), tempfile.mkdtemp(prefix="oa-cpu-ws-")
    env = {**os.environ, "OPENANALYST_DATA_DIR": data_dir, "OPENANALYST_OWNER_WORKSPACE": owner,
           "OPENANALYST_SANDBOX_LABELS": '{"openanalyst.test": "1"}', "OPENANALYST_SANDBOX_POLICY": str(policy),
           "PYTHONPATH": str(tree)}
    code = "import sys; from server.cli import main; sys.argv[0] = 'openanalyst'; main()"
    log = tempfile.TemporaryFile(prefix="oa-cpu-log-")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen([sys.executable, "-c", code, "--serve", str(port)], env=env, cwd=tree,
                            stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{tree}: the server did not come up")
            time.sleep(0.1)  # polling a starting process: a readiness check, not synchronisation
        lines = sequential(base, proc.pid, args.n)
        if args.load:
            lines.append(asyncio.run(load(base, proc.pid)))
        return lines
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        asyncio.run(_remove_containers(SandboxConfig(data_dir=Path(data_dir), image="unused")))
        for made in (data_dir, owner):
            release_all(Path(made))
            shutil.rmtree(made, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="a code tree (a git worktree); twice")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=600, help="sequential calls per mode and round")
    parser.add_argument("--load", action="store_true", help="also 20 tenants x 50 concurrent calls")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oa-cpu-policy-") as policy_dir:
        policy = bench_policy_file(Path(policy_dir))
        for r in range(args.rounds):
            for tree in args.tree:
                print(f"round {r + 1}, {tree}, load average {os.getloadavg()[0]:.1f}", flush=True)
                for line in one_round(Path(tree).resolve(), args, policy):
                    print("  " + line, flush=True)


if __name__ == "__main__":
    main()
