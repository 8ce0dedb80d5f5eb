"""The runner survives bad frames: raw bytes written to its stdin, answers read from its stdout."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_support import pid_alive

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


@pytest.mark.parametrize(
    "body",
    [b"garbage", b"[1,2,3]", b"\xff\xfe\xfd", b'{"type":"call"}', b'{"id": 1}', b"[" * 100_000 + b"]" * 100_000],
)
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
        *({"type": "call", "id": 5, "session": "s", "tool": "bash", "input": {"command": "true"}, "timeout_s": 5,
           "output_cap": 10, "call_id": bad} for bad in (3, "", "c" * 257)),
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
    assert answer["result"]["error"]["code"] == "PROTOCOL_ERROR" and "MAX_FRAME" in answer["result"]["error"]["message"]
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


def test_exit_fd_works_without_pidfd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where seccomp refuses pidfd_open, the exit fd still turns readable when the child exits, unreaped."""
    import os
    import select
    import subprocess

    from toolrunner.runner.procs import exit_fd

    def refuse(pid: int, flags: int = 0) -> int:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "pidfd_open", refuse)
    proc = subprocess.Popen(["sleep", "0.2"])
    fd = exit_fd(proc.pid)
    try:
        assert select.select([fd], [], [], 0.01)[0] == []
        assert select.select([fd], [], [], 5)[0] == [fd]
        assert proc.wait(timeout=5) == 0
    finally:
        os.close(fd)


def test_cancel_frame_stops_the_call_with_cancelled(raw: RawRunner) -> None:
    """A `cancel` for a running call kills it; its one result says CANCELLED and keeps the output so far."""
    raw.send(
        {
            "type": "call",
            "id": 3,
            "session": "s",
            "tool": "bash",
            "timeout_s": 30,
            "output_cap": 1000,
            "stream": True,
            "input": {"command": "echo begun; sleep 30"},
        }
    )
    chunk = raw.read()
    assert chunk == {"type": "chunk", "id": 3, "stream": "stdout", "data": "begun\n"}
    started = time.monotonic()
    raw.send({"type": "cancel", "id": 3})
    answer = raw.read()
    assert answer["type"] == "result" and answer["id"] == 3 and time.monotonic() - started < 5
    assert answer["result"]["error"]["code"] == "CANCELLED" and answer["result"]["output"] == "begun\n"
    raw.send({"type": "cancel", "id": 3})  # cancelling a finished call is harmless
    raw.assert_alive()


def test_children_scan_agrees_with_the_children_file() -> None:
    """The ppid scan used where /proc/<pid>/task/*/children is missing (gVisor) finds the same children."""
    from toolrunner.runner.procs import all_pids, children, ppid

    procs = [subprocess.Popen(["sleep", "5"]) for _ in range(3)]
    try:
        scanned = sorted(p for p in all_pids() if ppid(p) == os.getpid())
        assert {p.pid for p in procs} <= set(scanned)
        assert sorted(children(os.getpid())) == scanned
    finally:
        for p in procs:
            p.kill()
            p.wait()


VALID_INPUTS: dict[str, dict[str, Any]] = {
    "bash": {"command": "true", "timeout_s": 5, "run_in_background": False},
    "bash_output": {"id": "c1"},
    "kill_process": {"id": "c1"},
    "python": {"code": "pass", "timeout_s": 5},
    "javascript": {"code": "1", "timeout_s": 5},
    "repl": {"code": "1", "timeout_s": 5, "restart": False},
    "powershell": {"command": "x", "timeout_s": 5},
    "read_file": {"path": "f", "offset": 0, "limit": 5},
    "write_file": {"path": "f", "content": "x"},
    "edit_file": {"path": "f", "old_string": "x", "new_string": "y", "replace_all": False},
    "grep_search": {"pattern": "x", "path": ".", "glob": "*", "output_mode": "count", "case_insensitive": True},
    "glob_search": {"pattern": "*", "path": "."},
    "notebook_edit": {"path": "n.ipynb", "cell_index": 0, "new_source": "", "edit_mode": "insert", "cell_type": "code"},
}
WRONG_VALUES: list[Any] = [None, 7, -1, 1.5, True, [], {"a": 1}, "\x00"]


def test_wrong_field_types_never_give_internal(raw: RawRunner) -> None:
    """Every field of every tool, given a value of the wrong type, gets a stable non-INTERNAL answer."""
    n = 0
    for tool, valid in VALID_INPUTS.items():
        for field in valid:
            for value in WRONG_VALUES:
                n += 1
                raw.send(
                    {
                        "type": "call",
                        "id": n,
                        "session": "fuzz",
                        "tool": tool,
                        "timeout_s": 5,
                        "output_cap": 1000,
                        "input": {**valid, field: value},
                    }
                )
                answer = raw.read()
                assert answer["id"] == n
                error = answer["result"]["error"]
                assert error is None or error["code"] != "INTERNAL", (tool, field, value, error)
    raw.assert_alive()
