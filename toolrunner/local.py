"""The runner as a local subprocess reached over its pipes: for the runner's tests and benchmark, and for
development without Docker. It gives NO isolation: the tools act on the host as the calling user."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from toolrunner.channel import RunnerChannel

PACKAGE_PARENT = Path(__file__).resolve().parents[1]  # where `toolrunner` is importable from


@dataclass
class LocalRunner:
    proc: asyncio.subprocess.Process
    channel: RunnerChannel

    async def stop(self) -> None:
        """Close the channel, let the runner exit, kill it if it does not within 10 s."""
        await self.channel.close()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def start_local_runner(workspace: Path, *, grace_s: float = 3.0) -> LocalRunner:
    """Start `python -I -m toolrunner.runner --workspace DIR` and wait for its hello."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-m", "toolrunner.runner", "--workspace", str(workspace),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)}, cwd=str(workspace), limit=16 * 1024 * 1024,
    )
    assert proc.stdout is not None and proc.stdin is not None
    channel = RunnerChannel(proc.stdout, proc.stdin, grace_s=grace_s)
    await channel.hello()
    return LocalRunner(proc, channel)
