"""One long-lived bash per session, so a `bash` call costs a pipe round trip instead of a fork and exec.

Framing on the shell's stdin, which no command text can confuse: a short control line
``__oa_in N L;eval "$__oa_run"`` (bash parses it one read(2) per byte, so it is kept short), then exactly N
bytes: RAND (16 hex), SLOT (0/1), the call's process marker (L bytes) and the command, read with ``read -N``
under ``LC_ALL=C`` so N counts bytes. ``$__oa_run`` evals the command at top level with stdin /dev/null, then
``__oa_end`` saves the state (``export -p`` and a ``cd`` line, builtins only) to state slot SLOT, never the
one holding the last committed state, writes ``NUL RAND rc saved LF`` on the shell's original stdout and
stderr (kept as fds 62/63, so ``exec >file`` cannot hide it); ``__oa_in`` restores fds 1/2 first. The runner
cuts each stream at its marker; RAND is random per call, so output cannot forge an end.

A call that kills the shell (timeout, cancel, ``exit``, ``exec``, OOM) leaves it dead; the next call starts a
fresh one that sources the last committed state (two slots rather than a rename per call, which costs 0.1 ms
on overlayfs), so the caller sees a shell that survives with its cwd and exports.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from toolrunner.runner import stats
from toolrunner.runner.context import Call, ToolFailure
from toolrunner.runner.execute import DRAIN_S, classify
from toolrunner.runner.markers import Cut
from toolrunner.runner.procs import MARKER, REGISTRY, exit_code, exit_fd, kill_tree, killpg

if TYPE_CHECKING:
    from toolrunner.runner.state import Session

STATE_END = b"\n#oa-state-end\n"
# Every redirection costs bash ~10 syscalls (open, save, restore), each dearer inside a container, so the
# per-call path has few: the command's stdin, stderr of __oa_end (it hides an xtrace line), the state file;
# `exec` redirections, which save nothing, move fds 1/2 for the markers and back.
_SAVE = r"""__oa_save() { { builtin printf 'builtin unset BASH_ENV\n'; builtin export -p
builtin printf 'builtin cd -- %q 2>/dev/null\n#oa-state-end\n' "$PWD"; } >"$__oa_pre$__oa_slot.sh"; }
"""
_BOOT = r"""exec 62>&1 63>&2
__oa_run='{ eval "$__oa_cmd";}</dev/null;{ __oa_end $?;} 2>/dev/null'
__oa_in() { exec 1>&62 2>&63; LC_ALL=C IFS= builtin read -r -N "$1" __oa_cmd
__oa_tok=${__oa_cmd:0:16} __oa_slot=${__oa_cmd:16:1}
builtin export OPENANALYST_CALL=${__oa_cmd:17:$2}; __oa_cmd=${__oa_cmd:17+$2}; }
__oa_end() { builtin local __oa_rc=$1 __oa_ok; builtin set +xv; builtin disown -a; builtin unset OPENANALYST_CALL
builtin trap '' XFSZ; __oa_save; __oa_ok=$?; builtin trap - XFSZ
exec 1>&62; builtin printf '\0%s %d %d\n' "$__oa_tok" "$__oa_rc" "$__oa_ok"
exec 1>&63; builtin printf '\0%s %d %d\n' "$__oa_tok" "$__oa_rc" "$__oa_ok"; }
builtin trap 'builtin unset OPENANALYST_CALL; __oa_save 2>/dev/null' EXIT
"""
# Sourced through BASH_ENV from a file (bash would read it from the pipe one byte per syscall, ~4 ms in a
# container); the session's values come in variables it unsets.
_BOOT_TAIL = r"""__oa_pre=$__OA_PRE __oa_slot=$__OA_SLOT
[ -n "${__OA_STATE-}" ] && builtin source "$__OA_STATE" 2>/dev/null
builtin unset BASH_ENV __OA_PRE __OA_SLOT __OA_STATE
"""


def _boot_file(tmp: str) -> str | None:
    """The runner-wide boot script (written once), or None if it cannot be written."""
    path = os.path.join(tmp, "shell-boot.sh")
    if os.path.exists(path):
        return path
    part = f"{path}.{threading.get_ident()}"
    try:
        with open(part, "w", encoding="utf-8") as f:
            f.write(_SAVE + _BOOT + _BOOT_TAIL)
        os.replace(part, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(part)
        return None
    return path


class Shell:
    """The session's bash process; `run` must be called with the session's shell lock held."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.proc: subprocess.Popen[bytes] | None = None
        self.pidfd = -1
        self.running: Call | None = None
        self._spawn_lock = threading.Lock()  # start against stop, which may come from another thread
        tmp, prefix = session.runtime.tmp, session.prefix
        self.pre = os.path.join(tmp, f"{prefix}state")
        self.committed: int | None = None  # the slot holding the last complete saved state
        self._boot = b""  # what a new shell reads first on stdin (only when the boot file cannot be written)
        path = session.runtime.base_env.get("PATH")
        self.bash = shutil.which("bash", path=path) or "bash"

    def prestart(self) -> None:
        """Start the shell now, ahead of its first call (a spare); OSError or ToolFailure if it cannot."""
        self._start(None)
        if self._boot:  # no boot file (/tmp full): the boot must travel with the first call, so no spare
            self.reset()
            raise ToolFailure("RESOURCE_LIMIT", "no spare shell while /tmp is full")

    def _start(self, call: Call | None) -> subprocess.Popen[bytes]:
        rt = self.session.runtime
        with self._spawn_lock:
            if self.session.closed:
                raise ToolFailure("CANCELLED", "the session was closed")
            restore = self.committed is not None
            token = self.session.token("sh")
            # A saved state carries the whole environment, so variables unset in the session stay unset.
            env = {MARKER: token} if restore else {**rt.base_env, MARKER: token}
            state = self.state_path()
            boot_file = _boot_file(rt.tmp)
            if boot_file is not None:
                env.update(BASH_ENV=boot_file, __OA_PRE=self.pre, __OA_SLOT=str(self._slot()), __OA_STATE=state or "")
            try:
                proc = REGISTRY.spawn(
                    ["bash", "--noprofile", "--norc"],
                    token,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=rt.workspace.root,
                    env=env,
                    executable=self.bash,
                )
            except BlockingIOError as exc:
                if call is not None:
                    call.limit = "pids"
                raise ToolFailure("RESOURCE_LIMIT", f"cannot start the shell: {exc.strerror} (pids limit)") from None
            except FileNotFoundError as exc:
                raise ToolFailure("TOOL_UNAVAILABLE", "bash is not installed in the sandbox image") from exc
            except OSError as exc:
                raise ToolFailure("INTERNAL", f"cannot start the shell: {exc.strerror}") from None
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            boot = ""
            if boot_file is None:  # /tmp is full: the slow way, so that the shell still works to clean up
                boot = f"__oa_pre={shlex.quote(self.pre)} __oa_slot={self._slot()}\n{_SAVE}{_BOOT}"
                if state is not None:
                    boot += f"builtin source {shlex.quote(state)} 2>/dev/null\n"
            for f in (proc.stdin, proc.stdout, proc.stderr):
                os.set_blocking(f.fileno(), False)
            self.proc, self.pidfd = proc, exit_fd(proc.pid)
            self._boot = boot.encode()
            return proc

    def kill(self) -> None:
        """Kill the shell, its process group and everything it started (safe from any thread)."""
        with self._spawn_lock:
            if self.proc is not None:
                kill_tree(self.proc.pid)

    def reset(self) -> None:
        """Reap a dead or killed shell and close its pipes; the next call starts a fresh one."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        kill_tree(proc.pid)
        REGISTRY.finish(proc)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)
        self.pidfd = -1

    def _slot(self) -> int:
        """The slot the next save goes to: never the committed one."""
        return 0 if self.committed is None else 1 - self.committed

    def state_path(self) -> str | None:
        """The file holding the last committed state (a sourceable script), if any."""
        return None if self.committed is None else f"{self.pre}{self.committed}.sh"

    def forget_state(self) -> None:
        self.committed = None
        for slot in (0, 1):
            with contextlib.suppress(OSError):
                os.unlink(f"{self.pre}{slot}.sh")

    def run(self, call: Call, command: str) -> Callable[[], None]:
        """Run `command`; returns the tidy-up (kill what the command left behind) to run after the result."""
        data = command.encode("utf-8", "surrogatepass")
        proc = self.proc
        boot = b""
        if proc is None or proc.poll() is not None:
            self.reset()
            proc = self._start(call)
            boot = self._boot
        else:
            self._discard(proc)
        rand, slot = secrets.token_hex(8), self._slot()
        ctoken = self.session.token("c")
        head = f"{rand}{slot}{ctoken}".encode()
        control = f'__oa_in {len(head) + len(data)} {len(ctoken)};eval "$__oa_run"\n'.encode() + head
        REGISTRY.add_token(ctoken)
        self.running = call
        call.on_cancel(lambda: self.kill() if self.running is call else None)
        try:
            status, oom_before = self._pump(call, proc, boot + control + data, b"\0" + rand.encode() + b" ", ctoken)
        except BaseException:
            REGISTRY.drop_token(ctoken)
            raise
        finally:
            self.running = None
        if status is not None:
            rc, saved = status
            if saved == 0:
                self.committed = slot
        else:
            killed = call.timed_out or call.cancelled.is_set()
            self.reset()
            rc = exit_code(proc.returncode if proc.returncode is not None else -9)
            if not killed:
                self._adopt_exit_state(slot)
        classify(call, rc, oom_before, None)
        call.exit_code = rc
        if status is not None and rc == 128 + signal.SIGXFSZ:
            # Most likely `ulimit -f`, which cannot be raised again: later calls get a shell without it.
            self.kill()

        def tidy() -> None:
            # Whatever the command left running: the shell's children, then orphans that reached the subreaper.
            if status is not None:
                kill_tree(proc.pid, keep_root=True)
            REGISTRY.drop_token(ctoken)
            REGISTRY.sweep_orphans()

        return tidy

    def _adopt_exit_state(self, slot: int) -> None:
        """A shell that ended itself (`exit 3`) saved its state from the EXIT trap; keep it if complete."""
        try:
            with open(f"{self.pre}{slot}.sh", "rb") as f:
                if f.read().endswith(STATE_END):
                    self.committed = slot
        except OSError:
            pass

    def _discard(self, proc: subprocess.Popen[bytes]) -> None:
        """Drop stray bytes a killed leftover wrote after the previous call's marker."""
        for f in (proc.stdout, proc.stderr):
            assert f is not None
            with contextlib.suppress(OSError):
                while os.read(f.fileno(), 65536):
                    pass

    def _pump(
        self, call: Call, proc: subprocess.Popen[bytes], control: bytes, marker: bytes, ctoken: str
    ) -> tuple[tuple[int, int] | None, tuple[int, int]]:
        """Feed the command and stream its output: (rc, saved) once both markers came, or None if the shell
        died; and the cgroup's memory marks as the command started."""
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        out_fd, err_fd, in_fd = proc.stdout.fileno(), proc.stderr.fileno(), proc.stdin.fileno()
        cuts = {out_fd: Cut(marker), err_fd: Cut(marker)}
        streams = {out_fd: ("stdout", cuts[out_fd]), err_fd: ("stderr", cuts[err_fd])}
        pending = memoryview(control)
        try:
            pending = pending[os.write(in_fd, pending) :]
        except BlockingIOError:
            pass
        except OSError:
            pending = pending[:0]
        oom_before = stats.memory_marks()  # read while bash works on the command: ~0.1 ms in a container
        sel = selectors.DefaultSelector()
        try:
            for fd in streams:
                sel.register(fd, selectors.EVENT_READ)
            sel.register(self.pidfd, selectors.EVENT_READ)
            if pending:
                sel.register(in_fd, selectors.EVENT_WRITE)
            drain_until: float | None = None
            while streams and not (cuts[out_fd].done and cuts[err_fd].done):
                now = time.perf_counter()
                if drain_until is None and now >= call.deadline and not call.timed_out:
                    call.timed_out, call.limit = True, "timeout"
                    self.kill()
                if drain_until is not None and now >= drain_until:
                    break
                wait = (drain_until if drain_until is not None else call.deadline) - now
                for key, _ in sel.select(max(0.0, min(wait, 0.5)) if not call.timed_out else 0.05):
                    fd = int(key.fd)
                    if fd == in_fd:
                        try:
                            pending = pending[os.write(in_fd, pending) :]
                        except BlockingIOError:
                            continue
                        except OSError:
                            pending = pending[:0]
                        if not pending:
                            sel.unregister(in_fd)
                    elif fd == self.pidfd:
                        # The shell is gone: kill whatever still holds its pipes, then read what is left.
                        sel.unregister(fd)
                        killpg(proc.pid)
                        REGISTRY.drop_token(ctoken)
                        REGISTRY.sweep()
                        drain_until = time.perf_counter() + DRAIN_S
                    else:
                        self._read(call, fd, streams, sel)
            if cuts[out_fd].done and cuts[err_fd].done:
                return cuts[out_fd].status(), oom_before
            for name, cut in streams.values():
                call.output.add(cut.flush(), name)
            return None, oom_before
        finally:
            sel.close()

    @staticmethod
    def _read(call: Call, fd: int, streams: dict[int, tuple[str, Cut]], sel: selectors.BaseSelector) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        name, cut = streams[fd]
        if not data:
            sel.unregister(fd)
            del streams[fd]
            call.output.add(cut.flush(), name)
            return
        call.output.add(cut.feed(data), name)
