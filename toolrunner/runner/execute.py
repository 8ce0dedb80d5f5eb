"""Run one process for one call: capture its output within the cap, enforce the deadline and cancellation,
kill everything it started, and name the limit that stopped it (timeout, memory, pids, disk)."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from toolrunner.runner import stats
from toolrunner.runner.context import Call, ToolFailure
from toolrunner.runner.procs import REGISTRY, exit_code, exit_fd, kill_tree, output_pipe
from toolrunner.runner.runaway import runaway, watch
from toolrunner.runner.zygote import Forked

if TYPE_CHECKING:
    from toolrunner.runner.identity import Ident
    from toolrunner.runner.state import Session

_PIDS = re.compile(r"Resource temporarily unavailable|fork: retry|Cannot fork|can't start new thread|EAGAIN")
_KILLED = re.compile(r"\bKilled\b")
_DISK = re.compile(r"No space left on device|File too large|ENOSPC|EFBIG|Disk quota exceeded")
DRAIN_S = 1.0


def run(
    call: Call,
    argv: list[str],
    *,
    session: Session,
    env: dict[str, str],
    cwd: str,
    errors: bytearray | None = None,
    pass_fds: tuple[int, ...] = (),
    forked: Callable[[], Forked | None] | None = None,
) -> int:
    """Run `argv` as the session to completion (or limit); returns the exit code in shell convention.

    Output goes to ``call.output`` in arrival order; stderr goes to `errors` instead when one is given. The
    exit code is the kernel's; before returning, every process the call left is killed (procs.sweep).
    `forked`, when given, is tried first: a process forked by the session's zygote (toolrunner.runner.zygote)
    in place of starting `argv`, or None to start `argv` after all.
    """
    oom_before = stats.memory_marks()
    ident = session.ident
    proc: subprocess.Popen[bytes] | Forked | None = forked() if forked is not None else None
    try:
        proc = proc or _spawn(argv, ident, env=env, cwd=cwd, pass_fds=pass_fds)
    except BlockingIOError as exc:
        call.limit = "pids"
        raise ToolFailure("RESOURCE_LIMIT", f"cannot start a process: {exc.strerror} (pids limit)") from None
    except FileNotFoundError as exc:
        raise ToolFailure("TOOL_UNAVAILABLE", f"{argv[0]} is not installed in the sandbox image") from exc
    except OSError as exc:
        raise ToolFailure("INTERNAL", f"cannot start {argv[0]}: {exc.strerror}") from None
    assert proc.stdout is not None and proc.stderr is not None
    streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    try:
        call.on_cancel(lambda: kill_tree(proc.pid))
        pump(call, proc.pid, streams, errors)
    finally:
        code_raw = REGISTRY.finish(proc)
        grew = watch(ident)
        left = max(grew, REGISTRY.sweep(ident))
        drain(call, streams, errors)
        for f in (proc.stdout, proc.stderr):
            f.close()
    code = exit_code(code_raw)
    classify(call, code_raw, oom_before, errors)
    runaway(call, left)
    call.exit_code = code
    return code


def _spawn(argv: list[str], ident: Ident, *, env: dict[str, str], cwd: str,
           pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    """Start `argv` as the session with output pipes it may reopen by name (procs.output_pipe); Popen's own
    pipes would be the runner's, mode 0600, and ``open('/dev/stdout')`` in the call would fail."""
    out_r, out_w = output_pipe()
    err_r, err_w = output_pipe()
    try:
        try:
            proc = REGISTRY.spawn(argv, ident, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd=cwd,
                                  env=env, pass_fds=pass_fds)
        finally:
            os.close(out_w)
            os.close(err_w)
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    proc.stdout = os.fdopen(out_r, "rb", buffering=0)  # read as Popen's own pipes would be
    proc.stderr = os.fdopen(err_r, "rb", buffering=0)
    return proc


def pump(call: Call, pid: int, streams: dict[int, str], errors: bytearray | None = None) -> None:
    """Pass output on until process `pid` exits, killing its tree at the call's deadline."""
    sel = selectors.DefaultSelector()
    pidfd = exit_fd(pid)
    try:
        for fd in streams:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        while True:
            now = time.perf_counter()
            if now >= call.deadline and not call.timed_out:
                call.timed_out, call.limit = True, "timeout"
                kill_tree(pid)
            wait = max(0.0, min(call.deadline - now, 0.5)) if not call.timed_out else 0.05
            for key, _ in sel.select(wait):
                fd = int(key.fd)
                if fd == pidfd:
                    return
                read_into(call, fd, streams, sel, errors)
    finally:
        sel.close()
        os.close(pidfd)


def drain(call: Call, streams: dict[int, str], errors: bytearray | None = None) -> None:
    """Read what is left in a call's pipes: to EOF, since every writer is dead, or for DRAIN_S at most (a
    process of a live root of the session may hold a copy of the pipe)."""
    sel = selectors.DefaultSelector()
    try:
        for fd in streams:
            sel.register(fd, selectors.EVENT_READ)
        until = time.perf_counter() + DRAIN_S
        while streams and time.perf_counter() < until:
            for key, _ in sel.select(max(0.0, until - time.perf_counter())):
                read_into(call, int(key.fd), streams, sel, errors)
    finally:
        sel.close()


def read_into(
    call: Call,
    fd: int,
    streams: dict[int, str],
    sel: selectors.BaseSelector,
    errors: bytearray | None,
) -> None:
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        sel.unregister(fd)
        del streams[fd]
        return
    if streams[fd] == "stderr" and errors is not None:
        if len(errors) < 65536:
            errors += data[: 65536 - len(errors)]
        return
    call.output.add(data, streams[fd])


def classify(call: Call, returncode: int, oom_before: tuple[int, int], errors: bytearray | None) -> None:
    """Name the limit that stopped the process, if any (a timeout or cancel was already recorded)."""
    if call.timed_out or call.cancelled.is_set():
        return
    # A shell reports a child killed by signal N as 128 + N; a direct child shows -N.
    code = exit_code(returncode)
    tail = call.output.tail_text() + (errors or b"")[-4096:].decode("utf-8", "replace")
    if (code == 128 + signal.SIGKILL or _KILLED.search(tail)) and stats.oom_since(oom_before):
        call.limit = "memory"
        if code == 128 + signal.SIGKILL:
            call.failure = ("RESOURCE_LIMIT", "killed: the sandbox ran out of memory (memory limit)")
        else:
            call.note = "[a process was killed: the sandbox ran out of memory (memory limit)]"
        return
    if code == 128 + signal.SIGXFSZ:
        call.limit = "disk"
        call.failure = ("RESOURCE_LIMIT", "killed: the file size limit was exceeded (SIGXFSZ)")
        return
    refused = stats.pids_refused_since_last_check()
    if refused or (_PIDS.search(tail) and returncode != 0):
        # The pids cgroup's own count of refused forks is the evidence: a fork bomb's shell may exit 0 and
        # its processes die in the sweep before they print anything, while output that merely quotes the
        # message names no limit. Where the cgroup cannot say (no counter), a failing call that printed
        # the message still names it.
        call.limit = "pids"
    elif returncode != 0 and _DISK.search(tail):
        call.limit = "disk"
