"""The runner's check that an idle session shell is usable (bashshell._kill_pending): a shell that its own
session's code killed between calls must not be handed the next call (it would die with it, and the call
answer "the session's shell was killed" instead of running on a new shell)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from toolrunner.runner.bashshell import _kill_pending, _open_status

pytestmark = pytest.mark.timeout(30)


def test_a_live_process_is_not_dying_and_a_killed_one_is_at_once() -> None:
    """Alive: not dying. Right after SIGKILL, before anyone reaps it (a zombie, or still on its way out with the
    signal pending): dying. Reaped: dying (gone). A descriptor that could not be opened says nothing."""
    proc = subprocess.Popen(["sleep", "60"])
    fd = _open_status(proc.pid)
    try:
        assert fd >= 0 and not _kill_pending(fd)
        os.kill(proc.pid, signal.SIGKILL)
        assert _kill_pending(fd)  # pending or a zombie: never "alive" once kill() has returned
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        assert _kill_pending(fd)  # a zombie
        proc.wait(timeout=10)
        assert _kill_pending(fd)  # gone
    finally:
        os.close(fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not _kill_pending(-1)
