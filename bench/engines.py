"""A tool call on each way of reaching an engine, measured in one run; prints one table.

    .venv/bin/python bench/engines.py [--n 200]

Starts a second real dockerd (its own config, socket, data root and bridge; TLS on 127.0.0.1 with
certificates made for the run: tests/engine_support.py) and an sshd on 127.0.0.1, copies the sandbox image
over, then runs bash ``true`` through a SandboxManager reaching: the main engine's socket (the baseline), the
second engine's socket, the second engine over mutual TLS, and the main engine over SSH (a forwarded socket).
Also times the second engine's start and the image copy. Everything it starts is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from engine_support import copy_image, start_second_engine, start_sshd, stop_second_engine  # noqa: E402
from sandbox_support import Harness, make_config  # noqa: E402

from toolrunner.engines import EngineAddress, parse_engine  # noqa: E402
from toolrunner.image import ensure_sandbox_image  # noqa: E402


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def calls(engine: EngineAddress | None, image: str, data: Path, n: int,
          hosts: str | None = None) -> tuple[float, float]:
    """Median and p99 (ms) of bash ``true`` in one session, after a warm-up that starts the container
    (``hosts``: through an EngineSet over that OPENANALYST_DOCKER_HOSTS list)."""
    harness = Harness(make_config(data, image, docker_hosts=hosts), engine=engine)
    try:
        for _ in range(10):
            harness.bash("bench", "true")
        samples = sorted(timed(lambda: harness.bash("bench", "true")) * 1000 for _ in range(n))
        return statistics.median(samples), samples[min(n - 1, int(0.99 * n))]
    finally:
        harness.close()


def placement(hosts: str, image: str, data: Path) -> float:
    """Seconds an EngineSet takes to choose an engine for a new tenant with no fresh ping (the whole cost it
    adds to a container start; calls themselves never go through it)."""
    harness = Harness(make_config(data, image, docker_hosts=hosts))
    try:
        engines = harness.manager.backend
        samples = []
        for _ in range(50):
            for engine in engines._engines:
                engine.checked_at = -1e9  # stale: the next placement pings again
            samples.append(timed(lambda: harness.run(engines._candidates("nobody"))))
        return statistics.median(samples)
    finally:
        harness.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    import docker

    client = docker.from_env(timeout=120)
    image = ensure_sandbox_image(client, lambda line: print(f"[image] {line}", file=sys.stderr))
    client.close()
    load = os.getloadavg()
    rows: list[tuple[str, float, float]] = []
    setup: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="oa-bench-engines-") as tmp:
        base = Path(tmp)
        rows.append(("main engine, unix socket (baseline)", *calls(None, image, base / "main", args.n)))
        started = time.perf_counter()
        second = start_second_engine()
        setup.append(("second dockerd started", time.perf_counter() - started))
        sshd = start_sshd()
        try:
            setup.append(("sandbox image copied (docker save | docker load)", timed(lambda: copy_image(image, second))))
            unix = parse_engine(second.unix_url)
            rows.append(("second engine, unix socket", *calls(unix, image, base / "unix", args.n)))
            tls = parse_engine(second.tcp_url, tls_dir=second.client_tls)
            rows.append(("second engine, TCP + mutual TLS", *calls(tls, image, base / "tls", args.n)))
            hosts = f"unix:///var/run/docker.sock capacity=1, {second.tcp_url} tls={second.client_tls}"
            rows.append(("EngineSet of two, placed on the TLS engine", *calls(None, image, base / "set", args.n,
                                                                             hosts)))
            setup.append(("placement of a new tenant (both engines pinged), median of 50",
                          placement(hosts, image, base / "placement")))
            ssh = parse_engine("ssh://oa-engine-test", ssh_config=sshd.config)
            rows.append(("main engine over SSH (forwarded socket)", *calls(ssh, image, base / "ssh", args.n)))
        finally:
            sshd.stop()
            stop_second_engine(second)
    after = os.getloadavg()
    print(f"\nbash `true` in one session, n={args.n} (load {load[0]:.1f} -> {after[0]:.1f})\n")
    print(f"| {'engine reached through':<44} | median ms | p99 ms | vs baseline |")
    print(f"|{'-' * 46}|-----------|--------|-------------|")
    baseline = rows[0][1]
    for name, median, p99 in rows:
        print(f"| {name:<44} | {median:9.2f} | {p99:6.2f} | {median / baseline:10.2f}x |")
    print()
    for name, seconds in setup:
        print(f"{name}: {seconds:.1f} s" if seconds >= 0.1 else f"{name}: {seconds * 1000:.2f} ms")


if __name__ == "__main__":
    main()
