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


async def test_stopped_runner_is_declared_unresponsive_long_before_the_call_deadline(runner: Runner) -> None:
    """A SIGSTOPped runner leaves a ping unanswered: the call fails with SANDBOX_UNRESPONSIVE after the bound,
    not at its own deadline, and the broken channel fails every later call at once."""
    runner.channel.unresponsive_after_s = 0.5
    os.kill(runner.proc.pid, signal.SIGSTOP)
    try:
        r = await asyncio.wait_for(runner.call("bash", command="true", timeout_s=60), 10)
        assert r.error is not None and r.error.code == "SANDBOX_UNRESPONSIVE" and "0.5 s" in r.error.message
        later = await asyncio.wait_for(runner.call("bash", command="true"), 1)
        assert later.error is not None and later.error.code == "SANDBOX_UNRESPONSIVE"
        with pytest.raises(ChannelError):
            await runner.channel.ping()
    finally:
        os.kill(runner.proc.pid, signal.SIGCONT)


async def test_a_live_runner_is_not_declared_unresponsive_during_a_long_quiet_call(runner: Runner) -> None:
    """A call that sends nothing for many bounds succeeds: the runner answers the watchdog's pings meanwhile."""
    runner.channel.unresponsive_after_s = 0.2
    r = await runner.call("bash", command="sleep 1.2; echo done", timeout_s=30)
    assert r.error is None and r.output == "done\n" and runner.channel.broken is None


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


async def test_holds_counts_what_a_stop_would_lose(runner: Runner) -> None:
    """The runner's ``holds`` (in its stats answer) counts sessions, live REPLs and running background
    processes, which the manager weighs before evicting a container; a finished job no longer counts."""
    assert await runner.channel.holds() == {"sessions": 0, "calls": 0, "repls": 0, "background": 0}
    started = await runner.call("bash", session="a", command="sleep 30", run_in_background=True)
    assert started.error is None, started
    await runner.call("repl", session="b", code="x = 1")
    held = await runner.channel.holds()
    assert held == {"sessions": 2, "calls": 0, "repls": 1, "background": 1}, held
    token = started.output.split("background with id ", 1)[1].split()[0]
    assert (await runner.call("kill_process", session="a", id=token)).error is None
    assert (await runner.channel.holds() or {}).get("background") == 0


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


async def test_a_send_blocked_by_a_stopped_runner_fails_when_the_runner_is_declared_unresponsive(
        runner: Runner) -> None:
    """A runner that stopped reading cannot block the host in drain(): the watchdog's verdict ends the call."""
    runner.channel.unresponsive_after_s = 0.5
    os.kill(runner.proc.pid, signal.SIGSTOP)
    try:
        call = runner.call("write_file", path="big.txt", content="x" * 4_000_000, timeout_s=60)
        r = await asyncio.wait_for(call, 10)
        assert r.error is not None and r.error.code == "SANDBOX_UNRESPONSIVE"
    finally:
        os.kill(runner.proc.pid, signal.SIGCONT)


async def test_silent_peer_fails_every_call_in_flight_with_sandbox_unresponsive(
        pair: tuple[RunnerChannel, Peer]) -> None:
    """Calls with long timeouts all fail together once a ping goes unanswered for the bound."""
    channel, peer = pair
    channel.unresponsive_after_s = 0.3
    tasks = [asyncio.create_task(channel.call("s", "bash", {"command": "x"}, timeout_s=60, output_cap=100))
             for _ in range(2)]
    kinds = [(await peer.read())["type"] for _ in range(3)]  # two calls, then the watchdog's ping
    assert kinds == ["call", "call", "ping"]
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert [r.error.code if r.error else None for r in results] == ["SANDBOX_UNRESPONSIVE"] * 2
    assert channel.broken_code == "SANDBOX_UNRESPONSIVE"


async def test_a_stuck_call_on_a_live_runner_is_a_timeout_and_the_channel_lives(
        pair: tuple[RunnerChannel, Peer]) -> None:
    """Past timeout + grace the host pings; a runner that answers it is alive, so the call is a TIMEOUT."""
    channel, peer = pair
    channel.grace_s, channel.unresponsive_after_s = 0.1, 5.0
    task = asyncio.create_task(channel.call("s", "bash", {"command": "x"}, timeout_s=0.1, output_cap=100))
    seen: list[str] = []
    while "cancel" not in seen or "ping" not in seen:  # answer pings, never the call
        frame = await asyncio.wait_for(peer.read(), 10)
        seen.append(frame["type"])
        if frame["type"] == "ping":
            await peer.send({"type": "pong", "id": frame["id"]})
    r = await asyncio.wait_for(task, 10)
    assert r.error is not None and r.error.code == "TIMEOUT" and channel.broken is None
    task = asyncio.create_task(channel.call("s", "bash", {"command": "y"}, timeout_s=5, output_cap=100))
    frame = await peer.read()
    await peer.send({"type": "result", "id": frame["id"], "result": make_result("bash", "fine")})
    assert (await asyncio.wait_for(task, 5)).output == "fine"


async def test_a_quiet_peer_that_answers_pings_keeps_its_call(pair: tuple[RunnerChannel, Peer]) -> None:
    """Silence is not death: a call outlives several bounds while the peer answers the watchdog's pings."""
    channel, peer = pair
    channel.unresponsive_after_s = 0.2
    task = asyncio.create_task(channel.call("s", "bash", {"command": "x"}, timeout_s=30, output_cap=100))
    call = await peer.read()
    for _ in range(4):
        ping = await asyncio.wait_for(peer.read(), 5)
        assert ping["type"] == "ping"
        await peer.send({"type": "pong", "id": ping["id"]})
    await peer.send({"type": "result", "id": call["id"], "result": make_result("bash", "late")})
    r = await asyncio.wait_for(task, 5)
    assert r.error is None and r.output == "late" and channel.broken is None
