"""Fixtures for the runner tests: the real runner as a subprocess on a temp workspace, reached over its pipes
through the real RunnerChannel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from toolrunner.channel import RunnerChannel
from toolrunner.local import LocalRunner, start_local_runner
from toolrunner.results import ToolResult


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Runner:
    """A live runner process, its channel and its workspace."""

    proc: asyncio.subprocess.Process
    channel: RunnerChannel
    ws: Path

    async def call(
        self, tool: str, session: str = "s", timeout_s: float = 10.0, output_cap: int = 65536, **input: Any
    ) -> ToolResult:
        return await self.channel.call(session, tool, input, timeout_s=timeout_s, output_cap=output_cap)


async def start_runner(ws: Path) -> Runner:
    local = await start_local_runner(ws)
    return Runner(local.proc, local.channel, ws)


async def stop_runner(r: Runner) -> None:
    await LocalRunner(r.proc, r.channel).stop()


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[Runner]:
    ws = tmp_path / "ws"
    ws.mkdir()
    r = await start_runner(ws)
    try:
        yield r
    finally:
        await stop_runner(r)


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


async def wait_until(pred: Any, timeout_s: float = 5.0) -> bool:
    """Poll `pred` until it holds or the deadline passes (a condition wait, not a sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return bool(pred())
