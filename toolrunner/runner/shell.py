"""The `bash` tool and its background processes (`bash_output`, `kill_process`).

A `bash` call runs in a fresh shell of the session (bashshell.Shell) that starts from the state the previous
call saved, so cwd and exported variables persist as in a terminal; calls of one session take turns,
sessions run in parallel. A background process is a fresh ``bash -c`` that starts from the same saved state,
as the session's uid, outliving the call that started it until it ends, is killed, or the session closes.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import threading
import time

from toolrunner.runner.bashshell import Shell, proxy_exports
from toolrunner.runner.context import Call, ToolFailure, check_fields, opt_bool, require_str
from toolrunner.runner.identity import IdentityError, files_as
from toolrunner.runner.procs import REGISTRY, exit_code, exit_fd, kill_tree
from toolrunner.runner.spares import SPARES
from toolrunner.runner.state import Session

BG_BUFFER = 4 * 1024 * 1024


def _launch(session: Session, token: str, command: str,
            call_id: str | None) -> tuple[list[str], dict[str, str], list[str]]:
    """argv, environment and temp files of one background process.

    It starts from a private copy of the shell's committed state (the shell rewrites its state files), in
    the session's own directory, written as the session; the command is sourced from a file there, since
    another session can read every process's argv. Its proxy variables are those of the call that starts it
    (after the state, which holds an earlier call's), so its connections are that call's for as long as it
    runs.
    """
    env, temps = session.env(call_id), []
    state = session.shell.state_path() if session.shell is not None else None
    try:
        with files_as(session.ident):
            if state is not None:
                env_file = os.path.join(session.dir, f"{token}.env")
                temps.append(env_file)
                shutil.copyfile(state, env_file)
                with open(env_file, "a", encoding="utf-8") as f:
                    f.write(proxy_exports(session.proxy_env(call_id)))
                # The state carries the whole environment, so variables unset in the session stay unset.
                env = {"BASH_ENV": env_file}
            # Never in argv: /proc/<pid>/cmdline is readable by every uid (docs/runner-trust.md §3).
            path = os.path.join(session.dir, f"{token}.sh")
            temps.append(path)
            with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(command + "\n")
            return ["bash", "--noprofile", "--norc", "-c", f". {path}"], env, temps
    except (OSError, IdentityError) as exc:
        _unlink(session, temps)
        raise ToolFailure("RESOURCE_LIMIT", f"cannot write to /tmp: {exc}") from None


def _unlink(session: Session, paths: list[str]) -> None:
    with contextlib.suppress(IdentityError), files_as(session.ident):
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _turn(session: Session, call: Call) -> bool:
    """Wait for the session's shell, within the call's deadline; False if the call timed out or was cancelled."""
    while not session.shell_lock.acquire(timeout=max(0.0, min(call.remaining(), 0.1))):
        if call.cancelled.is_set():
            return False
        if call.remaining() <= 0:
            call.timed_out, call.limit = True, "timeout"
            return False
    return True


def bash(session: Session, call: Call) -> None:
    check_fields(call.input, {"command", "timeout_s", "run_in_background"})
    command = require_str(call.input, "command", allow_empty=False)
    if "\0" in command:
        raise ToolFailure("INVALID_INPUT", "field 'command' contains a NUL byte")
    if opt_bool(call.input, "run_in_background"):
        start_background(session, call, command)
        return
    if not _turn(session, call):
        return
    try:
        if session.closed or call.cancelled.is_set():
            raise ToolFailure("CANCELLED", "the session was closed")
        if session.shell is None:
            session.shell = SPARES.take(session) or Shell(session)
            call.defer(lambda: SPARES.refill(session.runtime))
        session.shell.run(call, command)
    finally:
        session.shell_lock.release()


class Background:
    """A process started with run_in_background: its unread output and its fate."""

    def __init__(self, session: Session, bid: str, proc: subprocess.Popen[bytes], temps: list[str]) -> None:
        self.id = bid
        self.proc = proc
        self.session = session
        self._temps = temps
        self._buf = bytearray()
        self.dropped = 0
        self._lock = threading.Lock()
        self.done = threading.Event()
        self.code: int | None = None
        threading.Thread(target=self._pump, name=f"bg-{bid}", daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        fds = [self.proc.stdout.fileno(), self.proc.stderr.fileno()]
        pidfd = exit_fd(self.proc.pid)
        sel = selectors.DefaultSelector()
        try:
            for fd in fds:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ)
            sel.register(pidfd, selectors.EVENT_READ)
            drain_until: float | None = None
            while fds and (drain_until is None or time.perf_counter() < drain_until):
                for key, _ in sel.select(0.5 if drain_until is None else 0.05):
                    fd = int(key.fd)
                    if fd == pidfd:
                        sel.unregister(pidfd)
                        # Its group goes with it; what it started that outlives it is swept below.
                        self.code = exit_code(REGISTRY.finish(self.proc))
                        REGISTRY.sweep(self.session.ident)
                        drain_until = time.perf_counter() + 1.0
                        continue
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(fd)
                        fds.remove(fd)
                    else:
                        self._append(data)
        finally:
            sel.close()
            os.close(pidfd)
            if self.code is None:
                self.code = exit_code(REGISTRY.finish(self.proc))
            _unlink(self.session, self._temps)
            self.done.set()

    def _append(self, data: bytes) -> None:
        with self._lock:
            self._buf += data
            over = len(self._buf) - BG_BUFFER
            if over > 0:
                del self._buf[:over]
                self.dropped += over

    def read(self, cap: int) -> tuple[bytes, int, bool]:
        """New output since the last read (at most `cap` bytes; the rest waits), bytes dropped, more left."""
        with self._lock:
            data = bytes(self._buf[:cap])
            del self._buf[:cap]
            dropped, self.dropped = self.dropped, 0
            return data, dropped, bool(self._buf)

    def kill(self) -> None:
        kill_tree(self.proc.pid)
        self.done.wait(5)


def start_background(session: Session, call: Call, command: str) -> None:
    token = session.token("bg")
    argv, env, temps = _launch(session, token, command, call.call_id)
    try:
        proc = REGISTRY.spawn(
            argv,
            session.ident,
            "background",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=session.runtime.workspace.root,
            env=env,
        )
    except OSError as exc:
        _unlink(session, temps)
        if isinstance(exc, BlockingIOError):
            call.limit = "pids"
        raise ToolFailure("RESOURCE_LIMIT", f"cannot start a process: {exc.strerror}") from None
    session.background[token] = Background(session, token, proc, temps)
    call.exit_code = 0
    call.output.add(
        f"started in the background with id {token} (pid {proc.pid}); read its output with "
        f"bash_output and stop it with kill_process\n".encode()
    )


def _get(session: Session, call: Call) -> Background:
    check_fields(call.input, {"id"})
    bid = require_str(call.input, "id", allow_empty=False)
    bg = session.background.get(bid)
    if bg is None:
        raise ToolFailure("PROCESS_NOT_FOUND", f"no background process {bid!r} in this session")
    return bg


def bash_output(session: Session, call: Call) -> None:
    bg = _get(session, call)
    finished = bg.done.is_set()
    data, dropped, more = bg.read(call.output.cap)
    if dropped:
        call.output.add(f"[{dropped} older bytes were dropped: the buffer holds {BG_BUFFER} bytes]\n".encode())
    call.output.add(data)
    if more:
        call.note = "[more output is waiting: call bash_output again]"
    if finished:
        call.exit_code = bg.code
        status = f"[process {bg.id} exited with code {bg.code}]"
    else:
        status = f"[process {bg.id} is still running]"
    call.note = f"{call.note}\n{status}" if call.note else status


def kill_process(session: Session, call: Call) -> None:
    bg = _get(session, call)
    if bg.done.is_set():
        call.exit_code = bg.code
        call.output.add(f"process {bg.id} had already exited with code {bg.code}".encode())
        return
    bg.kill()
    call.exit_code = 0
    call.output.add(f"process {bg.id} killed".encode())
