"""The runner's `reset` frame, sent by a host that re-attaches after a crash: it ends every call the previous
host left running (processes included), keeps sessions, and moves the new host's ids past the old ones."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from runner_support import pid_alive, wait_until

from toolrunner.channel import ChannelError, RunnerChannel
from toolrunner.local import PACKAGE_PARENT, start_local_runner
from toolrunner.protocol import HEADER, PROTOCOL_VERSION, decode, encode, frame_length

pytestmark = pytest.mark.anyio


def call_frame(cid: int, session: str, command: str) -> dict[str, object]:
    return {"type": "call", "id": cid, "session": session, "tool": "bash", "timeout_s": 60,
            "output_cap": 4096, "stream": False, "input": {"command": command}}


async def read_frame(reader: asyncio.StreamReader) -> dict[str, object]:
    async with asyncio.timeout(10):
        header = await reader.readexactly(HEADER.size)
        return decode(await reader.readexactly(frame_length(header)))


async def start_raw(ws: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-m", "toolrunner.runner", "--workspace", str(ws),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)}, cwd=str(ws), limit=16 * 1024 * 1024)
    assert proc.stdout is not None
    assert (await read_frame(proc.stdout))["type"] == "hello"
    return proc


async def stop_raw(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


async def pid_in(path: Path) -> int:
    assert await wait_until(lambda: path.exists() and path.read_text().strip() != "", 10), path
    return int(path.read_text())


async def test_reset_ends_every_call_in_flight_and_answers_after_them(tmp_path: Path) -> None:
    """Calls of two sessions are cancelled (CANCELLED results come first, their processes are gone), the
    answer counts them and names the highest id seen, and a session's shell state survives the reset."""
    proc = await start_raw(tmp_path)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(encode(call_frame(3, "a", "export KEPT=yes")))
        assert (await read_frame(proc.stdout))["id"] == 3
        proc.stdin.write(encode(call_frame(5, "a", "echo $$ > a.pid; sleep 300")))
        proc.stdin.write(encode(call_frame(7, "b", "sleep 300 & echo $! > b.pid; wait")))
        pids = [await pid_in(tmp_path / "a.pid"), await pid_in(tmp_path / "b.pid")]
        proc.stdin.write(encode({"type": "reset", "id": 1, "wait_s": 20}))
        frames = [await read_frame(proc.stdout) for _ in range(3)]
        results = {f["id"]: f for f in frames[:2]}
        assert set(results) == {5, 7} and all(f["type"] == "result" for f in frames[:2]), frames
        assert {r["result"]["error"]["code"] for r in results.values()} == {"CANCELLED"}  # type: ignore[index]
        assert frames[2] == {"type": "reset", "id": 1, "cancelled": 2, "left": 0, "max_id": 7}
        assert not any(pid_alive(pid) for pid in pids)
        proc.stdin.write(encode(call_frame(8, "a", "echo $KEPT")))
        kept = await read_frame(proc.stdout)
        assert kept["id"] == 8 and kept["result"]["output"] == "yes\n"  # type: ignore[index]
    finally:
        await stop_raw(proc)


async def test_a_reattached_channel_numbers_its_calls_past_the_old_hosts(tmp_path: Path) -> None:
    """A new RunnerChannel on a runner that still runs call 500 of an earlier host: `reset` ends that call,
    the old call's late result is dropped, and the channel's own ids continue after 500."""
    proc = await start_raw(tmp_path)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(encode(call_frame(500, "old", "echo $$ > old.pid; sleep 300")))
        old_pid = await pid_in(tmp_path / "old.pid")
        channel = RunnerChannel(proc.stdout, proc.stdin)
        proc.stdout.feed_data(encode({"type": "hello", "version": PROTOCOL_VERSION, "replayed": True}))
        await channel.hello(5)
        answer = await channel.reset(20)
        assert (answer["cancelled"], answer["left"], answer["max_id"]) == (1, 0, 500)
        assert not pid_alive(old_pid)
        assert (await channel.call("new", "bash", {"command": "echo fresh"}, timeout_s=10,
                                   output_cap=4096)).output == "fresh\n"
        again = await channel.reset(5)
        assert again["cancelled"] == 0 and again["max_id"] > 501
        await channel.close()
    finally:
        await stop_raw(proc)


async def test_bad_reset_fields_are_a_protocol_error(tmp_path: Path) -> None:
    """`wait_s` out of range is refused with PROTOCOL_ERROR and the runner keeps serving."""
    proc = await start_raw(tmp_path)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(encode({"type": "reset", "id": 2, "wait_s": 10_000}))
        refused = await read_frame(proc.stdout)
        assert refused["id"] == 2 and refused["result"]["error"]["code"] == "PROTOCOL_ERROR"  # type: ignore[index]
        proc.stdin.write(encode({"type": "ping", "id": 3}))
        assert await read_frame(proc.stdout) == {"type": "pong", "id": 3}
    finally:
        await stop_raw(proc)


async def test_an_implausible_reset_answer_is_refused() -> None:
    """A channel refuses a reset answer whose max_id it could not count past (the runner is untrusted)."""
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)
    wb.write(encode({"type": "hello", "version": PROTOCOL_VERSION}))
    channel = RunnerChannel(ra, wa, control_timeout_s=5)
    await channel.hello(5)
    pending = asyncio.ensure_future(channel.reset(0))
    sent = await read_frame(rb)
    assert sent["type"] == "reset"
    wb.write(encode({"type": "reset", "id": sent["id"], "cancelled": 0, "left": 0, "max_id": 2**60}))
    with pytest.raises(ChannelError, match="max_id"):
        await pending
    await channel.close()
    wb.close()


async def test_a_runner_told_to_stop_mid_call_ends_the_call_without_a_result(tmp_path: Path) -> None:
    """SIGTERM (a container being stopped) kills the call's processes and sends no CANCELLED result that
    nobody asked for: the host sees the stream end and fails the call with SANDBOX_DIED."""
    local = await start_local_runner(tmp_path)
    try:
        pending = asyncio.ensure_future(local.channel.call("s", "bash", {"command": "echo $$ > c.pid; sleep 300"},
                                                           timeout_s=60, output_cap=4096))
        pid = await pid_in(tmp_path / "c.pid")
        local.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            result = await pending
        assert result.error is not None and result.error.code == "SANDBOX_DIED", result
        assert await wait_until(lambda: not pid_alive(pid))
    finally:
        await local.stop()
