"""Log lines quoting what a runner sent are capped and rate-limited: a real process floods a real channel with
1 MB unknown frame types (what made the server log grow by 20 MB in 0.3 s), and the log stays small."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import textwrap
from pathlib import Path

import pytest

from toolrunner.channel import RunnerChannel
from toolrunner.logcap import CappedLog, shown

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]

FLOODER = textwrap.dedent("""
    import sys
    from toolrunner.protocol import PROTOCOL_VERSION, encode
    out = sys.stdout.buffer
    out.write(encode({"type": "hello", "version": PROTOCOL_VERSION}))
    big = "X" * 1_000_000
    for n in range(40):
        out.write(encode({"type": big + str(n)}))
        out.write(encode({"type": "result", "id": None, "result": big}))
    out.flush()
""")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_flood_of_huge_unknown_frames_writes_a_few_short_lines(caplog: pytest.LogCaptureFixture) -> None:
    """80 MB of quoted frames from a real process: a handful of lines of a few hundred bytes, and the count of
    what was dropped is written when the channel closes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", FLOODER, env=env, cwd=ROOT,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                limit=16 * 1024 * 1024)
    assert proc.stdout is not None and proc.stdin is not None
    channel = RunnerChannel(proc.stdout, proc.stdin)
    caplog.set_level(logging.WARNING, logger="toolrunner.channel")
    try:
        await channel.hello(timeout_s=30)
        await asyncio.wait_for(proc.wait(), 60)
        deadline = asyncio.get_running_loop().time() + 30
        while channel.broken is None:  # every frame was routed once the stream's end is seen
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
    finally:
        await channel.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [r.getMessage() for r in caplog.records if r.name == "toolrunner.channel"]
    assert sum(len(line) for line in lines) < 5_000, lines
    assert 2 <= len(lines) <= 14
    assert any("unknown frame type" in line for line in lines)
    suppressed = sum(int(word) for line in lines if "suppressed" in line
                     for word in line.split() if word.isdigit())
    assert suppressed == 80 - sum("suppressed" not in line for line in lines)


def test_rate_recovers_and_counts_what_it_dropped() -> None:
    """Per kind: a burst, then one line per 1/per_s seconds; the next line written carries the dropped count."""
    now = [0.0]
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("test.logcap")
    logger.addHandler(Collect())
    logger.propagate = False
    capped = CappedLog(logger, burst=2, per_s=1.0, clock=lambda: now[0])
    written = [capped.warning("a", "x %s", n) for n in range(5)]
    assert written == [True, True, False, False, False]
    assert capped.warning("b", "other kind %s", 1)  # kinds are limited separately
    now[0] = 1.0
    assert capped.warning("a", "x %s", 9)
    assert records[-1] == "x 9 (3 similar lines suppressed)"


def test_shown_cuts_before_building_the_repr() -> None:
    """A 1 MB string shows as its first characters and the size of the rest."""
    assert shown("y" * 1_000_000, 10) == "'yyyyyyyyyy'…[999990 more]"
    assert shown({"k": 1}) == "{'k': 1}"
