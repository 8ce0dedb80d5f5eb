"""RunnerChannel: multiplexing, cancellation, deadlines and broken channels, against the real runner, plus a
scripted peer on a socketpair for what a well-behaved runner never sends (oversized frames, floods)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from runner_support import Runner, pid_alive, wait_until

from toolrunner.channel import ChannelError, RunnerChannel
from toolrunner.protocol import HEADER, MAX_FRAME, decode, encode, frame_length, make_result

pytestmark = pytest.mark.anyio


async def test_concurrent_calls_are_matched_by_id(runner: Runner) -> None:
    """Several calls in flight at once each get their own result, and they really run in parallel."""
    started = time.perf_counter()
    results = await asyncio.gather(
        *(runner.call("bash", session=f"s{i % 2}", command=f"sleep 0.4; echo {i}") for i in range(6))
    )
    assert [r.output for r in results] == [f"{i}\n" for i in range(6)]
    assert time.perf_counter() - started < 2.0


async def test_cancelling_the_awaiting_task_stops_the_call(runner: Runner) -> None:
    """Cancelling the coroutine sends `cancel`; the runner kills the process and keeps serving."""
    task = asyncio.create_task(runner.call("bash", command="echo $$ > pid; sleep 30"))
    assert await wait_until(lambda: (runner.ws / "pid").exists() and (runner.ws / "pid").read_text().strip() != "")
    pid = int((runner.ws / "pid").read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_until(lambda: not pid_alive(pid))
    assert (await runner.call("bash", command="echo ok")).output == "ok\n"


async def test_hung_runner_cannot_hang_the_host(runner: Runner) -> None:
    """A runner that stops answering gives TIMEOUT after timeout_s + grace, not a hang."""
    runner.channel.grace_s = 0.3
    os.kill(runner.proc.pid, signal.SIGSTOP)
    try:
        started = time.perf_counter()
        r = await runner.call("bash", command="true", timeout_s=0.3)
        assert r.error is not None and r.error.code == "TIMEOUT" and r.timed_out
        assert 0.5 < time.perf_counter() - started < 2.0
    finally:
        os.kill(runner.proc.pid, signal.SIGCONT)
    assert (await runner.call("bash", command="echo back")).output == "back\n"


async def test_dead_runner_fails_calls_in_flight_with_sandbox_died(runner: Runner) -> None:
    """When the runner dies, every call in flight and every later call gets SANDBOX_DIED."""
    tasks = [asyncio.create_task(runner.call("bash", command="sleep 30")) for _ in range(3)]
    await asyncio.sleep(0)
    assert await wait_until(lambda: len(runner.channel._calls) == 3)
    runner.proc.kill()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert {r.error.code for r in results if r.error} == {"SANDBOX_DIED"} and len(results) == 3
    later = await runner.call("bash", command="true")
    assert later.error is not None and later.error.code == "SANDBOX_DIED"
    with pytest.raises(ChannelError):
        await runner.channel.ping()


async def test_ping_stats_and_close_session(runner: Runner) -> None:
    """ping answers with a round trip, stats with cgroup figures, close_session with a result."""
    assert await runner.channel.ping() >= 0
    stats = await runner.channel.stats()
    assert stats["cgroup"] in (1, 2) and "memory_bytes" in stats and "pids" in stats
    r = await runner.channel.close_session("never-used")
    assert r.error is None and r.tool_name == "close_session"


class Peer:
    """The far end of a socketpair, scripted by the test to play a misbehaving runner."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self) -> dict[str, Any]:
        return decode(await self.reader.readexactly(frame_length(await self.reader.readexactly(HEADER.size))))

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, obj: dict[str, Any]) -> None:
        await self.send_raw(encode(obj))


@pytest.fixture
async def pair() -> AsyncIterator[tuple[RunnerChannel, Peer]]:
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a, limit=2 * MAX_FRAME)
    rb, wb = await asyncio.open_connection(sock=b, limit=2 * MAX_FRAME)
    channel = RunnerChannel(ra, wa, grace_s=1.0)
    peer = Peer(rb, wb)
    await peer.send({"type": "hello", "version": 1, "pid": 1, "caps": {}})
    await channel.hello(timeout_s=5)
    yield channel, peer
    await channel.close()
    wb.close()


async def test_bad_hello_is_refused() -> None:
    """A first frame that is not a hello of our version is a ChannelError."""
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a)
    _, wb = await asyncio.open_connection(sock=b)
    wb.write(encode({"type": "hello", "version": 99}))
    channel = RunnerChannel(ra, wa)
    with pytest.raises(ChannelError, match="version"):
        await channel.hello(timeout_s=5)
    await channel.close()
    wb.close()


async def test_oversized_frame_from_runner_breaks_the_channel(pair: tuple[RunnerChannel, Peer]) -> None:
    """A length above MAX_FRAME from the runner fails the calls in flight with SANDBOX_DIED."""
    channel, peer = pair
    task = asyncio.create_task(channel.call("s", "bash", {"command": "x"}, timeout_s=5, output_cap=100))
    await peer.read()
    await peer.send_raw(HEADER.pack(MAX_FRAME + 1))
    r = await asyncio.wait_for(task, 5)
    assert r.error is not None and r.error.code == "SANDBOX_DIED" and "MAX_FRAME" in r.error.message


async def test_output_is_recut_and_chunks_bounded(pair: tuple[RunnerChannel, Peer]) -> None:
    """Output and chunks over the cap are cut on the host even if the runner ignores the cap."""
    channel, peer = pair
    got: list[str] = []

    async def on_chunk(stream: str, data: str) -> None:
        got.append(data)

    task = asyncio.create_task(
        channel.call("s", "bash", {"command": "x"}, timeout_s=5, output_cap=100, on_chunk=on_chunk)
    )
    frame = await peer.read()
    assert frame["stream"] is True and frame["output_cap"] == 100
    for _ in range(50):
        await peer.send({"type": "chunk", "id": frame["id"], "stream": "stdout", "data": "y" * 1000})
    await peer.send({"type": "result", "id": frame["id"], "result": make_result("bash", "z" * 1_000_000)})
    r = await asyncio.wait_for(task, 5)
    assert r.truncated and r.limit == "output" and len(r.output) < 100 + 4096 + 100
    assert sum(len(d) for d in got) <= 100


async def test_malformed_or_unknown_results_are_contained(pair: tuple[RunnerChannel, Peer]) -> None:
    """A result that breaks the contract becomes INTERNAL; unknown error codes become INTERNAL."""
    channel, peer = pair
    task = asyncio.create_task(channel.call("s", "bash", {}, timeout_s=5, output_cap=100))
    frame = await peer.read()
    await peer.send({"type": "result", "id": frame["id"], "result": {"tool_name": "bash", "__class__": "x"}})
    r = await asyncio.wait_for(task, 5)
    assert r.error is not None and r.error.code == "INTERNAL"
    task = asyncio.create_task(channel.call("s", "bash", {}, timeout_s=5, output_cap=100))
    frame = await peer.read()
    await peer.send({"type": "result", "id": 12345, "result": make_result("bash")})  # nobody waits for it
    await peer.send(
        {
            "type": "result",
            "id": frame["id"],
            "result": make_result("bash", error=("subprocess.Popen", "evil")),
        }
    )
    r = await asyncio.wait_for(task, 5)
    assert r.error is not None and r.error.code == "INTERNAL"


async def test_input_too_big_for_a_frame_is_invalid_input(runner: Runner) -> None:
    """An input that cannot fit in one frame is refused on the host with INVALID_INPUT; the channel lives."""
    r = await runner.call("write_file", path="big.txt", content="x" * (MAX_FRAME + 10))
    assert r.error is not None and r.error.code == "INVALID_INPUT" and "MAX_FRAME" in r.error.message
    assert (await runner.call("bash", command="echo fine")).output == "fine\n"


async def test_deadline_covers_a_send_blocked_by_a_stopped_runner(runner: Runner) -> None:
    """A runner that stopped reading cannot block the host in drain(): the call still ends with TIMEOUT."""
    runner.channel.grace_s = 0.3
    os.kill(runner.proc.pid, signal.SIGSTOP)
    try:
        started = time.perf_counter()
        r = await runner.call("write_file", path="big.txt", content="x" * 4_000_000, timeout_s=0.3)
        assert r.error is not None and r.error.code == "TIMEOUT"
        assert time.perf_counter() - started < 3.0
    finally:
        os.kill(runner.proc.pid, signal.SIGCONT)
    assert (await runner.call("bash", command="echo back")).output == "back\n"
