"""The `bash` tool and its background processes (`bash_output`, `kill_process`).

Each call is a fresh ``bash -c COMMAND`` in its own process group. Before the command runs, bash sources the
session's prelude (``BASH_ENV``): the exported variables the last completed call left (``export -p``) and
an EXIT trap that writes them back, with the cwd, to a pipe the runner reads. So a timeout kills one process
group and the session's "shell" survives; the state of a call that was killed is simply not saved. State
lives in the runner's memory and private temp dir, never in the workspace.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import subprocess
import threading
import time

from toolrunner.runner.context import Call, ToolFailure, check_fields, opt_bool, require_str
from toolrunner.runner.execute import SidePipe, close_quietly, run
from toolrunner.runner.procs import MARKER, REGISTRY, exit_code, exit_fd, killpg
from toolrunner.runner.state import Session

BG_BUFFER = 4 * 1024 * 1024
MAX_INLINE = 100_000  # one argv string may hold 128 KiB; a longer command is sourced from a file
PRELUDE = """builtin unset BASH_ENV
__oa_fd=${__OA_FD-}; builtin unset __OA_FD
__oa_save() { { builtin export -p; builtin printf '\\0%s\\0' "$PWD"; } >&"$__oa_fd" 2>/dev/null; }
[ -n "$__oa_fd" ] && trap __oa_save EXIT
"""
# Variables that describe one process, not the session: bash or the runner set them afresh on every call.
_VOLATILE = re.compile(rf"^declare -[a-zA-Z]+ (?:{MARKER}|PWD|SHLVL|BASH_ENV|__OA_FD)(?:=.*)?$\n?", re.M)


def _prelude(session: Session) -> str | None:
    """The session's BASH_ENV file, rewritten only when the saved state changed; None if /tmp is full."""
    path = os.path.join(session.runtime.tmp, f"{session.prefix}env.sh")
    with session.lock:
        if session.prelude_for != session.env_script or not os.path.exists(path):
            tmp = f"{path}.{threading.get_ident()}"
            try:
                with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
                    f.write(session.env_script + PRELUDE)
                os.replace(tmp, path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                return None
            session.prelude_for = session.env_script
    return path


def _launch(
    session: Session, token: str, command: str, state_fd: int | None
) -> tuple[list[str], dict[str, str], str | None]:
    """argv, environment and temp file (if any) of one bash call."""
    # Once a state exists it carries the whole environment, so unset variables stay unset.
    env = {} if session.env_script else dict(session.runtime.base_env)
    if state_fd is not None:
        env["__OA_FD"] = str(state_fd)
    prelude = _prelude(session)
    if prelude is not None:
        env["BASH_ENV"] = prelude
        argv, path = _command(session, token, command)
        return argv, env, path
    # /tmp is full (a tool filled the tmpfs): carry the prelude inline so the shell still works to clean up.
    inline = f"{session.env_script}{PRELUDE}{command}"
    if len(inline.encode("utf-8", "surrogatepass")) > MAX_INLINE:
        raise ToolFailure("RESOURCE_LIMIT", "/tmp is full and the command is too long to pass inline")
    return ["bash", "--noprofile", "--norc", "-c", inline], env, None


def _command(session: Session, token: str, command: str) -> tuple[list[str], str | None]:
    """argv running `command` in bash; a command too long for one argument is sourced from a file."""
    if len(command) <= MAX_INLINE // 4 or len(command.encode("utf-8", "surrogatepass")) <= MAX_INLINE:
        return ["bash", "--noprofile", "--norc", "-c", command], None
    path = os.path.join(session.runtime.tmp, f"{token}.sh")
    try:
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(command + "\n")
    except OSError as exc:
        raise ToolFailure("RESOURCE_LIMIT", f"cannot write the command to /tmp: {exc.strerror}") from None
    return ["bash", "--noprofile", "--norc", "-c", f". {path}"], path


def _save_state(session: Session, data: bytes) -> None:
    """Keep the state the EXIT trap wrote if it is complete: `export -p` NUL cwd NUL."""
    if data.count(b"\0") != 2 or not data.endswith(b"\0") or session.closed:
        return
    env_text, cwd, _ = data.split(b"\0")
    with session.lock:
        session.env_script = _VOLATILE.sub("", env_text.decode("utf-8", "surrogateescape"))
        session.shell_cwd = cwd.decode("utf-8", "surrogateescape")


def bash(session: Session, call: Call) -> None:
    check_fields(call.input, {"command", "timeout_s", "run_in_background"})
    command = require_str(call.input, "command", allow_empty=False)
    if "\0" in command:
        raise ToolFailure("INVALID_INPUT", "field 'command' contains a NUL byte")
    if opt_bool(call.input, "run_in_background"):
        start_background(session, call, command)
        return
    token = session.token("c")
    side = SidePipe.open()
    try:
        argv, env, path = _launch(session, token, command, side.w)
    except ToolFailure:
        close_quietly(side.r)
        close_quietly(side.w)
        raise
    try:
        run(call, argv, token=token, env=env, cwd=session.cwd(), side=side)
    finally:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
    if not (call.timed_out or call.cancelled.is_set()):
        _save_state(session, bytes(side.data))


class Background:
    """A process started with run_in_background: its unread output and its fate."""

    def __init__(self, bid: str, proc: subprocess.Popen[bytes], token: str, cmd_file: str | None) -> None:
        self.id = bid
        self.proc = proc
        self.token = token
        self._cmd_file = cmd_file
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
                        killpg(self.proc.pid)
                        REGISTRY.drop_token(self.token)
                        REGISTRY.sweep()
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
            self.code = exit_code(REGISTRY.finish(self.proc))
            REGISTRY.drop_token(self.token)
            REGISTRY.sweep()
            if self._cmd_file is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._cmd_file)
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
        killpg(self.proc.pid)
        self.done.wait(5)


def start_background(session: Session, call: Call, command: str) -> None:
    token = session.token("bg")
    bid = token[len(session.prefix) :]
    argv, env, cmd_file = _launch(session, token, command, None)
    REGISTRY.add_token(token)
    try:
        proc = REGISTRY.spawn(
            argv,
            token,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=session.cwd(),
            env={**env, MARKER: token},
        )
    except OSError as exc:
        REGISTRY.drop_token(token)
        if isinstance(exc, BlockingIOError):
            call.limit = "pids"
        raise ToolFailure("RESOURCE_LIMIT", f"cannot start a process: {exc.strerror}") from None
    session.background[bid] = Background(bid, proc, token, cmd_file)
    call.exit_code = 0
    call.output.add(
        f"started in the background with id {bid} (pid {proc.pid}); read its output with "
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
