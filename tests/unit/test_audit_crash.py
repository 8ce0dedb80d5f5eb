"""A process writing audit records in a loop, killed with SIGKILL mid-write, leaves a log that reopens without
incident and verifies — records and the signed head commit in one transaction, so a crash can only lose whole
commits, never tear one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server.audit.log import AuditLog
from server.audit.verify import verify_lines

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]

WRITER = """
import asyncio, sys
from pathlib import Path
from server.audit.log import AuditLog, CheckpointPolicy

async def main():
    log = AuditLog(Path(sys.argv[1]), checkpoints=CheckpointPolicy(every=7, interval_s=3600))
    await log.open()
    n = 0
    while True:
        common = {"call_id": f"w{sys.argv[2]}_{n}", "session_id": "s", "tool": "bash", "policy": "default",
                  "decision": "allowed"}
        tenants = [f"t{n % 3}", "t-all"]
        await asyncio.gather(*(log.started(t, input={"command": "x" * (n % 5000)}, **common) for t in tenants))
        await asyncio.gather(*(log.finished(t, result={"output": "y" * (n % 20000), "exit_code": 0},
                               oom_killed=False, container_id=None, image_id=None, **common) for t in tenants))
        n += 1
        print(n, flush=True)

asyncio.run(main())
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write_until_killed(path: Path, round_: int, calls: int) -> int:
    """Run the writer until it reports ``calls`` calls, then SIGKILL it mid-stream; returns calls seen."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(round_)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    seen = 0
    deadline = time.monotonic() + 60
    while seen < calls:
        assert time.monotonic() < deadline, "the writer did not get going"
        line = proc.stdout.readline()
        assert line, f"writer exited {proc.wait()}"
        seen = int(line)
    os.kill(proc.pid, signal.SIGKILL)  # while it is in the middle of the next commits
    proc.wait(timeout=10)
    proc.stdout.close()
    return seen


async def test_sigkill_during_writes_leaves_a_verifiable_log(tmp_path: Path) -> None:
    """Three SIGKILLs at different points: each reopen finds no incident, closes the calls the kill cut off
    as INTERRUPTED, and every tenant's chain (and its export, with the public key) verifies."""
    path = tmp_path / "audit.db"
    for round_, calls in enumerate((40, 95, 160)):
        write_until_killed(path, round_, calls)
        log = AuditLog(path)
        await log.open()
        try:
            assert log.warnings == [], log.warnings
            for tenant in ("t0", "t1", "t2", "t-all"):
                verdict = await log.verify(tenant)
                assert verdict["ok"] is True, (tenant, verdict)
                export = verify_lines(list(log.iter_export(tenant)), log.public_key)
                assert export.ok and export.tail_authenticated, export
                started = await log.count(tenant, phase="started")
                assert await log.count(tenant, phase="finished") == started  # nothing left open
            assert await log.count("t-all", phase="started") >= calls
        finally:
            await log.close()
