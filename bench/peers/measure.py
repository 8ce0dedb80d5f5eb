"""Time ``true`` and ``python3 -c pass`` through llm-sandbox and SWE-ReX; run by the peers' venv, not ours.

    <peer venv>/bin/python bench/peers/measure.py --image TAG --swerex-image TAG --n N --out FILE

Writes one JSON object to FILE (the peers log to stdout): ``{"rows": [{"what", "command", "samples_s",
"note"}], "errors": [...]}``. A peer that fails is reported in ``errors`` and the other still runs. Every
container carries ``openanalyst.test=1`` and is removed at the end (llm-sandbox's ``with`` block, SWE-ReX's
``--rm`` and stop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

COMMANDS = ("true", "python3 -c pass")
LABELS = {"openanalyst.test": "1"}


def timed(n: int, call: Callable[[], Any]) -> list[float]:
    for _ in range(3):  # warm-up, not recorded
        call()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
    return samples


async def atimed(n: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    for _ in range(3):
        await call()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t)
    return samples


def llm_sandbox_rows(image: str, n: int) -> list[dict[str, Any]]:
    """llm-sandbox's Docker backend: ``execute_command`` is a docker exec per command in a kept container."""
    from llm_sandbox import SandboxSession  # type: ignore[import-not-found]  # the peers venv only

    rows = []
    with SandboxSession(lang="python", image=image, keep_template=True, verbose=False,
                        runtime_configs={"labels": LABELS}) as session:
        for command in COMMANDS:
            def run(command: str = command) -> None:
                result = session.execute_command(command)
                if result.exit_code != 0:
                    raise RuntimeError(f"llm-sandbox {command!r} exited {result.exit_code}")
            rows.append({"what": "llm-sandbox execute_command", "command": command, "samples_s": timed(n, run),
                         "note": "docker exec per command"})
    return rows


async def swerex_rows(image: str, n: int) -> list[dict[str, Any]]:
    """SWE-ReX's DockerDeployment on the derived image: ``execute`` (a subprocess per call, no session) and
    ``run_in_session`` (its pexpect bash session), both over HTTP to swerex-remote in the container."""
    from swerex.deployment.docker import DockerDeployment  # type: ignore[import-not-found]
    from swerex.runtime.abstract import BashAction, Command, CreateBashSessionRequest  # type: ignore[import-not-found]

    deployment = DockerDeployment(image=image, python_standalone_dir=None, pull="never", startup_timeout=120,
                                  docker_args=[f"--label={k}={v}" for k, v in LABELS.items()])
    await deployment.start()
    rows = []
    try:
        runtime = deployment.runtime
        await runtime.create_session(CreateBashSessionRequest())
        for command in COMMANDS:
            async def execute(command: str = command) -> None:
                result = await runtime.execute(Command(command=command, shell=True))
                if result.exit_code != 0:
                    raise RuntimeError(f"swe-rex execute {command!r} exited {result.exit_code}")

            async def in_session(command: str = command) -> None:
                result = await runtime.run_in_session(BashAction(command=command, check="raise"))
                if result.exit_code not in (0, None):
                    raise RuntimeError(f"swe-rex session {command!r} exited {result.exit_code}")

            rows.append({"what": "SWE-ReX execute", "command": command, "samples_s": await atimed(n, execute),
                         "note": "HTTP to swerex-remote, a subprocess per call"})
            rows.append({"what": "SWE-ReX bash session", "command": command,
                         "samples_s": await atimed(n, in_session), "note": "HTTP to swerex-remote, pexpect bash"})
    finally:
        await deployment.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True, help="our sandbox image (llm-sandbox runs on it)")
    parser.add_argument("--swerex-image", required=True, help="our image with swerex-remote copied in")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--out", required=True, help="where the JSON report goes")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        rows += llm_sandbox_rows(args.image, args.n)
    except Exception as exc:  # report and go on: one peer failing must not hide the other
        errors.append(f"llm-sandbox: {exc!r}"[:300])
    try:
        rows += asyncio.run(swerex_rows(args.swerex_image, args.n))
    except Exception as exc:
        errors.append(f"swe-rex: {exc!r}"[:300])
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump({"rows": rows, "errors": errors}, out)


if __name__ == "__main__":
    main()
