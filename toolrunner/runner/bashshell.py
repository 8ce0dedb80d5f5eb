"""A session's `bash`: one bash process per call, started ahead of the call, whose exit status is the result.

Nothing the command prints or does can forge the result: the exit code is what ``waitpid`` says about the
call's bash process, the output is what its own pipes carried until every process of the call was killed,
and there is no marker or control text on the command's streams (docs/runner-trust.md §2).

Speed comes from starting the *next* shell when a call ends, off the answer's path: it sources the
runner's boot file (read-only to tools) and blocks reading ``LEN\\n`` + LEN bytes of command from a pipe
only the runner holds. The call then costs one pipe write, the command, the exit and the reap. After
reading the command the shell sources the session's last saved state (``export -p`` and a ``cd`` line) and
``eval``s the command; its EXIT trap saves the new state into the slot the runner named, never the one
holding the last committed state, so a call killed while saving loses nothing. Sourcing the state only once
the command has arrived means that whatever a call wrote into its state runs inside the next call, never
between calls.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from toolrunner.runner import stats
from toolrunner.runner.context import Call, ToolFailure
from toolrunner.runner.execute import classify, drain, read_into
from toolrunner.runner.identity import IdentityError, files_as
from toolrunner.runner.procs import REGISTRY, SPARE, exit_code, exit_fd, kill_tree

if TYPE_CHECKING:
    from toolrunner.runner.state import Session

STATE_END = b"\n#oa-state-end\n"
# The EXIT trap: builtins only (a fork would cost a millisecond), stderr hidden (an xtrace line).
_BOOT = r"""__oa_save() { { builtin printf 'builtin unset BASH_ENV\n'; builtin export -p; builtin declare -f
builtin printf 'builtin cd -- %q 2>/dev/null\n#oa-state-end\n' "$PWD"; } >"$__oa_out" 2>/dev/null; }
__oa_out=$__OA_OUT __oa_state=$__OA_STATE __oa_fd=$__OA_FD
builtin unset BASH_ENV __OA_OUT __OA_STATE __OA_FD
builtin trap '{ builtin set +xv; __oa_save; } 2>/dev/null' EXIT
"""
# The -c script: read the command, restore the state, run the command at top level with stdin /dev/null.
_MAIN = r"""IFS= builtin read -r __oa_n <&"$__oa_fd" || builtin exit 125
LC_ALL=C IFS= builtin read -r -N "$__oa_n" __oa_cmd <&"$__oa_fd"; exec {__oa_fd}<&- </dev/null
[ -n "$__oa_state" ] && builtin source "$__oa_state" 2>/dev/null
builtin unset __oa_n __oa_state __oa_fd
builtin eval "$__oa_cmd"
"""


def boot_file(tmp: str) -> str:
    """The runner-wide boot script, written once into the runner's directory (tools may read, not write)."""
    path = os.path.join(tmp, "shell-boot.sh")
    if not os.path.exists(path):
        part = f"{path}.{threading.get_ident()}"
        try:
            with open(part, "w", encoding="utf-8") as f:
                f.write(_BOOT)
            os.chmod(part, 0o644)
            os.replace(part, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise ToolFailure("RESOURCE_LIMIT", f"cannot write the shell's boot file: {exc.strerror}") from None
    return path


class Shell:
    """The session's bash calls; `run` must be called with the session's shell lock held."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.next: subprocess.Popen[bytes] | None = None  # started ahead, waiting for its command
        self.cmd_fd = -1  # the write end of `next`'s fd 3
        self.running: subprocess.Popen[bytes] | None = None
        self.committed: int | None = None  # the slot holding the last complete saved state
        self._spawn_lock = threading.Lock()
        path = session.runtime.base_env.get("PATH")
        self.bash = shutil.which("bash", path=path) or "bash"

    def _slot_path(self, slot: int) -> str:
        return os.path.join(self.session.dir, f"state{slot}.sh")

    def state_path(self) -> str | None:
        """The file holding the last committed state (a sourceable script), if any."""
        return None if self.committed is None else self._slot_path(self.committed)

    def _free_slot(self) -> int:
        return 0 if self.committed is None else 1 - self.committed

    def prestart(self) -> None:
        """Start the next call's shell now (OSError or ToolFailure if it cannot)."""
        with self._spawn_lock:
            if self.next is not None and self.next.poll() is None:
                return
            self._close_next()
            self._spawn()

    def _spawn(self) -> None:
        session, rt = self.session, self.session.runtime
        if session.closed:
            raise ToolFailure("CANCELLED", "the session was closed")
        state = "" if self.committed is None else self._slot_path(self.committed)
        # A saved state carries the whole environment, so variables unset in the session stay unset.
        env = {} if state else session.env()
        cmd_r, cmd_w = os.pipe()
        env.update(BASH_ENV=boot_file(rt.tmp), __OA_OUT=self._slot_path(self._free_slot()), __OA_STATE=state,
                   __OA_FD=str(cmd_r))
        try:
            proc = REGISTRY.spawn(
                ["bash", "--noprofile", "--norc", "-c", _MAIN],
                session.ident,
                SPARE,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(cmd_r,),
                cwd=rt.workspace.root,
                env=env,
                executable=self.bash,
            )
        except BlockingIOError as exc:
            os.close(cmd_w)
            raise ToolFailure("RESOURCE_LIMIT", f"cannot start the shell: {exc.strerror} (pids limit)") from None
        except FileNotFoundError as exc:
            os.close(cmd_w)
            raise ToolFailure("TOOL_UNAVAILABLE", "bash is not installed in the sandbox image") from exc
        except OSError as exc:
            os.close(cmd_w)
            raise ToolFailure("INTERNAL", f"cannot start the shell: {exc.strerror}") from None
        finally:
            os.close(cmd_r)
        os.set_inheritable(cmd_w, False)
        self.next, self.cmd_fd = proc, cmd_w

    def _close_next(self) -> None:
        proc, self.next = self.next, None
        if self.cmd_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.cmd_fd)
            self.cmd_fd = -1
        if proc is not None:
            kill_tree(proc.pid)
            REGISTRY.finish(proc)
            _close_pipes(proc)

    def kill(self) -> None:
        """Kill the running call's shell and everything it started (safe from any thread)."""
        with self._spawn_lock:
            proc = self.running
            if proc is not None:
                kill_tree(proc.pid)

    def reset(self) -> None:
        """Drop the started-ahead shell (session close)."""
        with self._spawn_lock:
            self._close_next()

    def run(self, call: Call, command: str) -> None:
        """Run `command` in a fresh shell of the session; sets the call's exit code and limit."""
        data = command.encode("utf-8", "surrogatepass")
        with self._spawn_lock:
            if self.next is None or self.next.poll() is not None:
                self._close_next()
                try:
                    self._spawn()
                except ToolFailure as exc:
                    if "pids limit" in exc.message:
                        call.limit = "pids"
                    raise
            proc, cmd_fd = self.next, self.cmd_fd
            assert proc is not None
            self.next, self.cmd_fd = None, -1
            self.running = proc
            REGISTRY.set_kind(proc.pid, "call")
        slot = self._free_slot()
        call.on_cancel(lambda: self.kill() if self.running is proc else None)
        oom_before = stats.memory_marks()
        try:
            self._pump(call, proc, cmd_fd, f"{len(data)}\n".encode() + data)
        finally:
            with contextlib.suppress(OSError):
                os.close(cmd_fd)
            returncode = REGISTRY.finish(proc)
            with self._spawn_lock:
                self.running = None
            REGISTRY.sweep(self.session.ident)
            assert proc.stdout is not None and proc.stderr is not None
            drain(call, {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"})
            _close_pipes(proc)
        rc = exit_code(returncode)
        if self._saved(slot):
            self.committed = slot
        classify(call, returncode, oom_before, None)
        call.exit_code = rc

    def _saved(self, slot: int) -> bool:
        """Whether the call's EXIT trap left a complete state in `slot` (a killed shell leaves none)."""
        try:
            with files_as(self.session.ident), open(self._slot_path(slot), "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - len(STATE_END)))
                return f.read() == STATE_END
        except (OSError, IdentityError):
            return False

    def _pump(self, call: Call, proc: subprocess.Popen[bytes], cmd_fd: int, command: bytes) -> None:
        """Feed the command and stream the output until the shell exits (or the deadline kills it)."""
        assert proc.stdout is not None and proc.stderr is not None
        streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
        pending = memoryview(command)
        os.set_blocking(cmd_fd, False)
        pidfd = exit_fd(proc.pid)
        sel = selectors.DefaultSelector()
        try:
            for fd in streams:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ)
            sel.register(pidfd, selectors.EVENT_READ)
            sel.register(cmd_fd, selectors.EVENT_WRITE)
            while True:
                now = time.perf_counter()
                if now >= call.deadline and not call.timed_out:
                    call.timed_out, call.limit = True, "timeout"
                    kill_tree(proc.pid)
                wait = max(0.0, min(call.deadline - now, 0.5)) if not call.timed_out else 0.05
                for key, _ in sel.select(wait):
                    fd = int(key.fd)
                    if fd == pidfd:
                        return
                    if fd == cmd_fd:
                        try:
                            pending = pending[os.write(cmd_fd, pending) :]
                        except BlockingIOError:
                            continue
                        except OSError:
                            pending = pending[:0]  # the shell is gone; its exit ends the call
                        if not pending:
                            sel.unregister(cmd_fd)
                        continue
                    read_into(call, fd, streams, sel, None)
        finally:
            sel.close()
            os.close(pidfd)


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()

