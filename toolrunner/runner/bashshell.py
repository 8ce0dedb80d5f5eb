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
import re
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

STATE_END = b"#oa-state-end\n"
MAX_STATE = 8 * 1024 * 1024  # a saved state beyond this is not kept (the previous one stays)
# The EXIT trap writes the state to a pipe the runner reads: builtins only (a fork costs a millisecond), no
# file (an open and close on the tmpfs cost more than the rest of a `true` call), stderr hidden (xtrace).
_BOOT = r"""__oa_save() { { builtin export -p; builtin declare -f
builtin printf 'builtin cd -- %q 2>/dev/null\n#oa-state-end\n' "$PWD"; } >&"$__oa_sfd"; }
__oa_in=$__OA_IN __oa_fd=$__OA_FD __oa_sfd=$__OA_SFD
builtin unset BASH_ENV __OA_IN __OA_FD __OA_SFD
builtin trap '{ builtin set +xv; __oa_save; } 2>/dev/null' EXIT
"""
# The -c script: restore the saved state, then run the command at top level. Both come as whole scripts on
# pipes that the runner closes once written (`source` reads a pipe in blocks until EOF; `read -N` would need
# LC_ALL=C, and every locale switch costs bash a reload). During the command its stdin is the drained
# command pipe (EOF, like /dev/null) and the pipe's own fd is closed.
_MAIN = r"""builtin source "/dev/fd/$__oa_in" 2>/dev/null; exec {__oa_in}<&- </dev/null
__oa_c=$__oa_fd; builtin unset __oa_in __oa_fd
builtin source /dev/stdin <&"$__oa_c" {__oa_c}<&-
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
        self.in_fd = -1  # the write end of `next`'s state-in pipe
        self.cmd_fd = -1  # the write end of `next`'s command pipe
        self.state_fd = -1  # the read end of `next`'s state pipe
        self.running: subprocess.Popen[bytes] | None = None
        self.state = b""  # the last complete saved state (exports, functions, cwd), held by the runner
        self._spawn_lock = threading.Lock()
        path = session.runtime.base_env.get("PATH")
        self.bash = shutil.which("bash", path=path) or "bash"

    def state_path(self) -> str | None:
        """The saved state written, as the session, to a file in its private directory (for a background
        process's BASH_ENV); None if there is no state yet."""
        if not self.state:
            return None
        path = os.path.join(self.session.dir, "state.sh")
        try:
            with files_as(self.session.ident), open(path, "wb") as f:
                f.write(b"builtin unset BASH_ENV\n" + self.state)
        except (OSError, IdentityError):
            return None
        return path

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
        # A saved state carries the whole environment, so variables unset in the session stay unset; only
        # the locale is passed ahead, so that bash loads it while it waits (a call would pay ~1.5 ms for it).
        env = _locale_of(self.state) if self.state else session.env()
        # The shell reopens its input pipes through /dev/fd, which checks the pipe's owner: make them as the
        # session (another uid, and so every other session, still cannot open them).
        with files_as(session.ident):
            in_r, in_w = os.pipe()
            cmd_r, cmd_w = os.pipe()
        state_r, state_w = os.pipe()
        env.update(BASH_ENV=boot_file(rt.tmp), __OA_IN=str(in_r), __OA_FD=str(cmd_r), __OA_SFD=str(state_w))
        try:
            proc = REGISTRY.spawn(
                ["bash", "--noprofile", "--norc", "-c", _MAIN],
                session.ident,
                SPARE,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(in_r, cmd_r, state_w),
                cwd=rt.workspace.root,
                env=env,
                executable=self.bash,
            )
        except OSError as exc:
            for fd in (in_w, cmd_w, state_r):
                os.close(fd)
            if isinstance(exc, BlockingIOError):
                raise ToolFailure("RESOURCE_LIMIT", f"cannot start the shell: {exc.strerror} (pids limit)") from None
            if isinstance(exc, FileNotFoundError):
                raise ToolFailure("TOOL_UNAVAILABLE", "bash is not installed in the sandbox image") from exc
            raise ToolFailure("INTERNAL", f"cannot start the shell: {exc.strerror}") from None
        finally:
            for fd in (in_r, cmd_r, state_w):
                os.close(fd)
        self.next, self.in_fd, self.cmd_fd, self.state_fd = proc, in_w, cmd_w, state_r

    def _close_next(self) -> None:
        proc, self.next = self.next, None
        for fd in (self.in_fd, self.cmd_fd, self.state_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.in_fd = self.cmd_fd = self.state_fd = -1
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
            proc, in_fd, cmd_fd, state_fd = self.next, self.in_fd, self.cmd_fd, self.state_fd
            assert proc is not None
            self.next, self.in_fd, self.cmd_fd, self.state_fd = None, -1, -1, -1
            self.running = proc
            REGISTRY.set_kind(proc.pid, "call")
        call.on_cancel(lambda: self.kill() if self.running is proc else None)
        oom_before = stats.memory_marks()
        saved = bytearray()
        feeds = {in_fd: memoryview(self.state), cmd_fd: memoryview(data)}
        try:
            self._pump(call, proc, feeds, state_fd, saved)
        finally:
            for fd in feeds:  # what _pump did not finish writing (and so did not close)
                with contextlib.suppress(OSError):
                    os.close(fd)
            returncode = REGISTRY.finish(proc)
            with self._spawn_lock:
                self.running = None
            REGISTRY.sweep(self.session.ident)
            assert proc.stdout is not None and proc.stderr is not None
            drain(call, {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"})
            _read_state(state_fd, saved)
            os.close(state_fd)
            _close_pipes(proc)
        # Kept only when complete: a shell killed while saving (timeout, cancel, OOM) keeps the previous one.
        if saved.endswith(STATE_END) and len(saved) <= MAX_STATE:
            self.state = bytes(saved)
        classify(call, returncode, oom_before, None)
        call.exit_code = exit_code(returncode)

    def _pump(
        self,
        call: Call,
        proc: subprocess.Popen[bytes],
        feeds: dict[int, memoryview],
        state_fd: int,
        saved: bytearray,
    ) -> None:
        """Feed the state and command, stream the output and collect the saved state until the shell exits (or
        the deadline kills it)."""
        assert proc.stdout is not None and proc.stderr is not None
        streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
        for fd in feeds:
            os.set_blocking(fd, False)
        pidfd = exit_fd(proc.pid)
        sel = selectors.DefaultSelector()
        try:
            for fd in streams:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ)
            sel.register(pidfd, selectors.EVENT_READ)
            for fd in feeds:
                sel.register(fd, selectors.EVENT_WRITE)
            os.set_blocking(state_fd, False)
            sel.register(state_fd, selectors.EVENT_READ)
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
                    if fd in feeds:
                        # Written whole, then closed: the shell reads each pipe to its end.
                        try:
                            feeds[fd] = feeds[fd][os.write(fd, feeds[fd]) :]
                        except BlockingIOError:
                            continue
                        except OSError:
                            feeds[fd] = feeds[fd][:0]  # the shell is gone; its exit ends the call
                        if not feeds[fd]:
                            sel.unregister(fd)
                            del feeds[fd]
                            os.close(fd)
                        continue
                    if fd == state_fd:
                        if not _read_state(state_fd, saved, once=True):
                            sel.unregister(state_fd)
                        continue
                    read_into(call, fd, streams, sel, None)
        finally:
            sel.close()
            os.close(pidfd)


_LOCALE_LINE = re.compile(rb'^declare -x (LANG|LANGUAGE|LC_[A-Z]+)="([^"\\$`]*)"$', re.M)


def _locale_of(state: bytes) -> dict[str, str]:
    """The locale variables a saved state exports (plain values only; the state sets them again anyway)."""
    return {m[1].decode(): m[2].decode("utf-8", "replace") for m in _LOCALE_LINE.finditer(state)}


def _read_state(fd: int, saved: bytearray, *, once: bool = False) -> bool:
    """Read the shell's saved state (bounded: past MAX_STATE it is read and dropped); False at EOF."""
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        if len(saved) <= MAX_STATE:
            saved += data
        if once:
            return True


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()

