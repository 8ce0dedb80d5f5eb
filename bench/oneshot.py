"""One-shot code and session-less calls, measured in one run against the real engine; prints one table.

    .venv/bin/python bench/oneshot.py [--n 40] [--policy ci] [--image TAG] [--no-why]

Rows: the host's own start-up (``/usr/bin/python3 -c pass``, ``node -e 0``, ``true``) as the baseline; through
``SandboxManager.call`` in a session: the `python` tool with an empty program (the first call, a process of
its own, and the later ones, forked from the session's zygote), `javascript`, bash ``python3 -c pass`` and
bash ``true``; the same without a session (a throwaway ``oneshot-`` session per call, closed after it, as the
HTTP API does), back to back and 0.3 s apart (the runner's spare refilled meanwhile); a new tenant's first
call. Unless ``--no-why``: ``python3 -c pass`` in a loop inside a bare container of the same image, then with
each of the policy's settings alone, then with all of them (wall and CPU per start), which says where the
container's extra cost comes from (docs/speed.md). Every container carries ``openanalyst.test=1`` and a
bench-only server id, and is removed at the end.
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
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from toolcall import resolve_image

from policies.loader import policy_for
from policies.model import Policy
from toolrunner.config import SandboxConfig
from toolrunner.docker_backend import DockerBackend
from toolrunner.manager import SandboxManager
from toolrunner.quota import release_all

ROWS: list[tuple[str, str, str, str, str]] = []
HOST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else (shutil.which("python3") or "python3")


def row(name: str, samples_s: list[float], note: str = "") -> None:
    ms = sorted(s * 1000 for s in samples_s)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    ROWS.append((name, str(len(ms)), f"{statistics.median(ms):.2f}", f"{p90:.2f}", note))
    print(f"  {name}: median {statistics.median(ms):.2f} ms", file=sys.stderr)


def host(n: int) -> None:
    for argv, what in (([HOST_PYTHON, "-c", "pass"], f"host {HOST_PYTHON} -c pass"),
                       (["node", "-e", "0"], "host node -e 0"), (["true"], "host true")):
        if shutil.which(argv[0]) is None:
            continue
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run(argv, check=True)
            samples.append(time.perf_counter() - t)
        row(what, samples, "baseline: subprocess.run")


async def timed(manager: SandboxManager, tenant: str, session: str, tool: str, inp: dict[str, Any]) -> float:
    t = time.perf_counter()
    outcome = await manager.call(tenant, session, tool, inp)
    elapsed = time.perf_counter() - t
    if outcome.result.error is not None or outcome.result.exit_code != 0:
        raise RuntimeError(f"bench call failed: {outcome.result}")
    return elapsed


async def in_session(manager: SandboxManager, n: int) -> None:
    tenant = "bench-code"
    await manager.ensure_started(tenant)
    first = [await timed(manager, tenant, f"first-{i}", "python", {"code": "pass"}) for i in range(max(5, n // 4))]
    row("python tool `pass`, a session's first call", first, "a process of its own (zygote starts after)")
    for _ in range(200):  # until the zygote serves the session (it starts after the first call answered)
        out = await manager.call(tenant, "s", "python", {"code": "import sys; print(sys.flags.no_user_site)"})
        if out.result.output.strip() == "1":
            break
        await asyncio.sleep(0.05)
    rows = (("python tool `pass`, in a session", "python", {"code": "pass"}, "forked from the session's zygote"),
            ("javascript tool `0`, in a session", "javascript", {"code": "0"}, "node started per call"),
            ("bash `python3 -c pass`, in a session", "bash", {"command": "python3 -c pass"}, "the session shell"),
            ("bash `true`, in a session", "bash", {"command": "true"}, "the session shell"))
    for name, tool, inp, note in rows:
        await timed(manager, tenant, "s", tool, inp)
        row(name, [await timed(manager, tenant, "s", tool, inp) for _ in range(n)], note)


async def sessionless(manager: SandboxManager, n: int) -> None:
    tenant = "bench-none"
    await manager.ensure_started(tenant)

    async def once(tool: str, inp: dict[str, Any]) -> float:
        session = f"oneshot-{uuid.uuid4().hex}"
        try:
            return await timed(manager, tenant, session, tool, inp)
        finally:
            await manager.close_session(tenant, session)

    for name, tool, inp in (("python tool `pass`, no session", "python", {"code": "pass"}),
                            ("bash `true`, no session", "bash", {"command": "true"})):
        await once(tool, inp)
        row(f"{name}, back to back", [await once(tool, inp) for _ in range(n)],
            "a throwaway session per call, closed after it")
        spaced = []
        for _ in range(max(10, n // 4)):
            await asyncio.sleep(0.3)  # an agent's pace: the spare (and its zygote) is refilled meanwhile
            spaced.append(await once(tool, inp))
        row(f"{name}, 0.3 s apart", spaced, "the same, the spare refilled between calls")


async def cold(manager: SandboxManager, rounds: int) -> None:
    samples = [await timed(manager, f"bench-cold-{i}", "s", "bash", {"command": "true"}) for i in range(rounds)]
    row("new tenant's first call, cold", samples, "create + start + hello + call")


LOOP = ('for k in $(seq {n}); do python3 -c pass; done; times')


def why(image: str, policy: Policy, n: int) -> None:
    """python3 -c pass in a loop in a bare container, with each of the policy's settings, and with all."""
    settings = {
        "none": [],
        f"--cpus {policy.cpus}": ["--cpus", str(policy.cpus)],
        "--read-only + tmpfs": ["--read-only", "--tmpfs", "/tmp"],
        "cap-drop ALL, no-new-privileges, uid 10000": ["--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                                                       "--user", "10000:1000"],
        "seccomp unconfined (docker's default off)": ["--security-opt", "seccomp=unconfined"],
        f"--memory {policy.memory_mb}m --pids-limit {policy.pids} --init": [
            "--memory", f"{policy.memory_mb}m", "--pids-limit", str(policy.pids), "--init"],
        "all of the policy's settings": ["--cpus", str(policy.cpus), "--read-only", "--tmpfs", "/tmp",
                                         "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                                         "--user", "10000:1000", "--memory", f"{policy.memory_mb}m",
                                         "--pids-limit", str(policy.pids), "--init", "--network", "none"],
    }
    for name, flags in settings.items():
        argv = ["docker", "run", "--rm", "--label", "openanalyst.test=1", *flags, "--entrypoint", "bash", image,
                "-c", f"s=$(date +%s%N); {LOOP.format(n=n)}; e=$(date +%s%N); echo $(( (e - s) / {n} ))"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        lines = done.stdout.split()
        if done.returncode != 0 or len(lines) < 5:
            ROWS.append((f"container python3 -c pass: {name}", "", "n/a", "", done.stderr.strip()[-60:]))
            continue
        wall_ms = int(lines[-1]) / 1e6
        cpu_ms = sum(_seconds(x) for x in lines[2:4]) * 1000 / n  # `times`: children's user and sys
        ROWS.append((f"container python3 -c pass: {name}", str(n), f"{wall_ms:.2f}", "",
                     f"CPU {cpu_ms:.2f} ms per start (user+sys)"))
        print(f"  {name}: {wall_ms:.2f} ms, CPU {cpu_ms:.2f} ms", file=sys.stderr)


def _seconds(text: str) -> float:
    minutes, _, seconds = text.rstrip("s").partition("m")
    return int(minutes) * 60 + float(seconds)


def bench_manager(image: str, policy_name: str) -> tuple[SandboxManager, SandboxConfig]:
    """A manager of our own (bench-only server id, test label) whose tenants all run under `policy_name`."""
    preset = policy_for(policy_name)
    policy = Policy.model_validate({**preset.model_dump(), "name": "bench", "max_concurrent_calls": 64})
    data_dir = Path(tempfile.mkdtemp(prefix="oa-bench-"))
    config = SandboxConfig(data_dir=data_dir, image=image, server_id=f"bench-{uuid.uuid4().hex[:8]}",
                           extra_labels={"openanalyst.test": "1"}, owner_workspace=data_dir / "owner")
    return SandboxManager(config, lambda _tenant: policy, backend=DockerBackend(timeout_s=60)), config


async def main_async(args: argparse.Namespace, image: str) -> None:
    manager, config = bench_manager(image, args.policy)
    try:
        await in_session(manager, args.n)
        await sessionless(manager, args.n)
        await cold(manager, args.rounds)
    finally:
        await manager.shutdown()
        for container in await manager.backend.list_managed(config.instance_id):
            await manager.backend.remove(str(container["Id"]))
        manager.backend.close()
        release_all(config.data_dir)
        shutil.rmtree(config.data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=40, help="samples per latency row")
    parser.add_argument("--rounds", type=int, default=5, help="new tenants for the cold row")
    parser.add_argument("--policy", default="ci", help="policy preset the containers run under")
    parser.add_argument("--image", help="sandbox image tag (default: build or reuse the current one)")
    parser.add_argument("--no-why", dest="why", action="store_false", help="skip the bare-container matrix")
    args = parser.parse_args()
    image = resolve_image(args.image)
    print(f"load before: {os.getloadavg()}", file=sys.stderr)
    host(args.n)
    asyncio.run(main_async(args, image))
    if args.why:
        why(image, policy_for(args.policy), max(10, args.n // 2))
    header = ("what", "n", "median ms", "p90 ms", "note")
    widths = [max(len(r[i]) for r in [*ROWS, header]) for i in range(5)]
    for line in (header, tuple("-" * w for w in widths), *ROWS):
        print(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
