"""The runner's handle on a session's zygote (toolrunner/runner/zygote.py), with a zygote of our own uid."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator

import pytest
from runner_support import wait_until

from toolrunner.runner import zygote as zygote_module
from toolrunner.runner.identity import Ident
from toolrunner.runner.zygote import Zygote


@pytest.fixture
def zygote() -> Iterator[Zygote]:
    started = Zygote.start(Ident(os.getuid(), os.getgid(), own=True), sys.executable, dict(os.environ))
    assert started is not None
    try:
        yield started
    finally:
        started.stop()


@pytest.mark.anyio
async def test_a_reaped_zygote_is_never_signalled(zygote: Zygote, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the zygote died and was reaped its pid may belong to another session's process: stopping it (as a
    fork request that found it dead does) then signals nothing."""
    os.kill(zygote.proc.pid, signal.SIGKILL)
    assert await wait_until(lambda: not zygote.alive(), 10), "the zygote was not reaped"
    sent: list[tuple[str, int, int]] = []
    monkeypatch.setattr(zygote_module.os, "kill", lambda pid, sig: sent.append(("kill", pid, sig)))
    monkeypatch.setattr(zygote_module, "killpg", lambda pgid, sig=signal.SIGKILL: sent.append(("killpg", pgid, sig)))
    zygote.stop()
    assert zygote.fork("/", "/nonexistent.py", {}) is None
    assert sent == []
