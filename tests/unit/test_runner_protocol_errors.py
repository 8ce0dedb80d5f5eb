"""The runner survives bad frames: raw bytes written to its stdin, answers read from its stdout."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import pid_alive

from toolrunner.protocol import MAX_FRAME, encode, read_frame


class RawRunner:
    def __init__(self, ws: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "toolrunner.runner", "--workspace", str(ws)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(ws),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        hello = read_frame(self.stdout)
        assert hello is not None and hello["type"] == "hello" and hello["version"] == 1

    def send_raw(self, data: bytes) -> None:
        self.stdin.write(data)
        self.stdin.flush()

    def send(self, obj: dict[str, Any]) -> None:
        self.send_raw(encode(obj))

    def read(self) -> dict[str, Any]:
        frame = read_frame(self.stdout)
        assert frame is not None
        return frame

    def assert_alive(self) -> None:
        self.send({"type": "ping", "id": 999})
        assert self.read() == {"type": "pong", "id": 999}


@pytest.fixture
def raw(tmp_path: Path) -> Iterator[RawRunner]:
    r = RawRunner(tmp_path)
    yield r
    r.proc.kill()
    r.proc.wait()
    r.stdin.close()
    r.stdout.close()


def _body(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


@pytest.mark.parametrize("body", [b"garbage", b"[1,2,3]", b"\xff\xfe\xfd", b'{"type":"call"}', b'{"id": 1}'])
def test_garbage_frame_gets_protocol_error_and_runner_lives(raw: RawRunner, body: bytes) -> None:
    """A body that is not a valid frame is answered with PROTOCOL_ERROR and the runner keeps serving."""
    raw.send_raw(_body(body))
    answer = raw.read()
    assert answer["type"] == "result" and answer["result"]["error"]["code"] == "PROTOCOL_ERROR"
    raw.assert_alive()


@pytest.mark.parametrize(
    "frame",
    [
        {
            "type": "call",
            "id": 5,
            "session": "s",
            "tool": "bash",
            "input": "x",
            "timeout_s": 5,
            "output_cap": 10,
        },
        {
            "type": "call",
            "id": 5,
            "session": "",
            "tool": "bash",
            "input": {},
            "timeout_s": 5,
            "output_cap": 10,
        },
        {
            "type": "call",
            "id": 5,
            "session": "s",
            "tool": "bash",
            "input": {},
            "timeout_s": -1,
            "output_cap": 10,
        },
        {
            "type": "call",
            "id": 5,
            "session": "s",
            "tool": "bash",
            "input": {},
            "timeout_s": 5,
            "output_cap": 10**9,
        },
        {"type": "teleport", "id": 5},
        {"type": "close_session", "id": 5, "session": 3},
    ],
)
def test_bad_call_fields_get_protocol_error_with_the_id(raw: RawRunner, frame: dict[str, Any]) -> None:
    """A frame with bad fields is answered for its own id with PROTOCOL_ERROR naming the problem."""
    raw.send(frame)
    answer = raw.read()
    assert answer["id"] == 5 and answer["result"]["error"]["code"] == "PROTOCOL_ERROR"
    raw.assert_alive()


def test_oversized_frame_closes_the_channel_cleanly(raw: RawRunner) -> None:
    """An announced length above MAX_FRAME is answered once with PROTOCOL_ERROR, then the runner exits."""
    raw.send_raw(struct.pack(">I", MAX_FRAME + 1) + b"x" * 100)
    answer = raw.read()
    assert (
        answer["result"]["error"]["code"] == "PROTOCOL_ERROR"
        and "MAX_FRAME" in answer["result"]["error"]["message"]
    )
    assert raw.proc.wait(timeout=10) == 2
    assert read_frame(raw.stdout) is None


def test_eof_shuts_down_and_kills_background_processes(raw: RawRunner, tmp_path: Path) -> None:
    """When the host goes away the runner kills every session's processes and exits."""
    raw.send(
        {
            "type": "call",
            "id": 1,
            "session": "s",
            "tool": "bash",
            "timeout_s": 5,
            "output_cap": 1000,
            "input": {"command": "sleep 300", "run_in_background": True},
        }
    )
    answer = raw.read()
    pid = int(answer["result"]["output"].split("(pid ")[1].split(")")[0])
    raw.stdin.close()
    assert raw.proc.wait(timeout=10) == 0
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_alive(pid)
