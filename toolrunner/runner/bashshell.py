"""A session's `bash`: a warm shell that forks one subshell per call and reports the subshell's exit status.

Starting bash costs several milliseconds in a container (the binary and its libraries come through the
storage driver); forking an already running bash costs a fraction of one. So each session has one
long-lived *session shell* that never runs a command itself. Per call it reads a fixed-width header
(``%010d %010d\\n``, the two lengths) plus the saved state and the command from a pipe only the runner
holds, forks a subshell that restores the state and ``eval``s the command, waits for it, and writes the
subshell's exit status — what ``waitpid`` said — to a status pipe. The runner then sweeps what the call
left (or tells the shell to: its ``kill -9 -1`` reaches every process of the session's uid but itself, at
once) and sends a random nonce; the shell writes ``NUL nonce LF`` on stdout and stderr, which ends the call's output.

Why the command cannot forge the result (docs/runner-trust.md §2):
- the session shell runs from an execute-only copy of bash (``oa-shell``, mode 0711), so the kernel marks
  it non-dumpable: no process, not even of its own uid, can trace it or open its ``/proc`` fds or memory;
- the subshell closes the status pipe before running anything, and the nonce is read only after the
  subshell is dead, so no command ever holds either; its functions and traps die with it;
- the session shell ignores every signal a command could send it but SIGKILL and SIGSTOP; those end or
  freeze it, which the runner sees (death, or the deadline) and reports as such, never as success.

The saved state (exports, functions, cwd) is written by the subshell's EXIT trap to a state pipe and kept by
the runner; it is evaluated only inside the next subshell, never in the session shell.
"""

from __future__ import annotations

import contextlib
import os
import re
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
from toolrunner.runner.execute import classify, drain
from toolrunner.runner.identity import IdentityError, files_as
from toolrunner.runner.markers import Cut
from toolrunner.runner.procs import IDLE_SHELL, REGISTRY, exit_code, exit_fd, killpg
from toolrunner.runner.runaway import runaway, watch

if TYPE_CHECKING:
    from toolrunner.runner.state import Session

SESSION_SHELL = "/usr/libexec/openanalyst/oa-shell"  # bash, mode 0711: executable, not readable
STATE_END = b"#oa-state-end\n"
MAX_STATE = 8 * 1024 * 1024  # a saved state beyond this is not kept (the previous one stays)
SHELL_KIND = "shell"
_HEADER_LEN = 22  # "%010d %010d\n": the state's and the command's lengths
_NONCE_LEN = 32  # hex digits of the end nonce
_END_LEN = _NONCE_LEN + 3  # "nonce K\n" (kill every other process of the uid) or "nonce -\n"
_SIGNALS = "HUP INT QUIT TERM USR1 USR2 PIPE ALRM TSTP TTIN TTOU XFSZ"
# The OOM killer takes the session's processes before the runner (oom_score_adj 1000, inherited by every
# subshell and command; raising it needs no privilege). Builtins only: a fork or an exec costs a millisecond.
# LC_ALL=C in the session shell makes `read -N` count bytes; the session's own locale is loaded once ahead,
# so a subshell that switches to it reads no file.
# Every syscall counts (each passes the container's seccomp filter; a bash redirection is five to ten of
# them), so the fds are laid out once, at start: requests come on a copy of the runner's pipe, stdin is
# /dev/null (opened once: an open of a device costs ~0.15 ms in a container), and the session shell's own
# stderr stays closed — the subshell gets the real one back from a copy — so bash's own "Terminated" notice
# for a killed subshell is never mistaken for the command's output. The request header and the end line
# have fixed lengths, so `read -N` takes each in one read(2) (a line read from a pipe is a read(2) per byte).
# The copies' numbers are bash's choice (`{var}<&0`: the lowest free fd from 10), never fixed ones: a fixed
# number can be the status or state pipe the runner passed (its numbers are the runner's, past 50 with ten
# sessions), which `exec N<&0` would silently replace; the call then waited for a status never written.
_SESSION_SHELL = rf"""builtin trap '' {_SIGNALS}
{{ builtin echo 1000 >/proc/self/oom_score_adj; }} 2>&-
__oa_sfd=$__OA_SFD __oa_xfd=$__OA_XFD
LC_ALL=${{__OA_LOCALE:-C}}; LC_ALL=C
builtin unset __OA_SFD __OA_XFD __OA_LOCALE
exec {{__oa_in}}<&0 {{__oa_err}}>&2 0</dev/null 2>&-
__oa_save() {{ {{ builtin export -p; builtin declare -f
builtin printf 'builtin cd -- %q 2>&-\n#oa-state-end\n' "$PWD"; }} >&"$__oa_sfd"; }}
while IFS= builtin read -r -N {_HEADER_LEN} -u "$__oa_in" __oa_h; do
__oa_ns=$((10#${{__oa_h:0:10}})) __oa_nc=$((10#${{__oa_h:11:10}})) __oa_st= __oa_c=
[ "$__oa_ns" -gt 0 ] && IFS= builtin read -r -N "$__oa_ns" -u "$__oa_in" __oa_st
[ "$__oa_nc" -gt 0 ] && IFS= builtin read -r -N "$__oa_nc" -u "$__oa_in" __oa_c
( builtin trap - {_SIGNALS}
builtin trap '{{ builtin trap - DEBUG RETURN ERR; builtin set +xvTE; __oa_save; }} 2>&-' EXIT
exec 2>&"$__oa_err" {{__oa_err}}>&- {{__oa_in}}<&- {{__oa_xfd}}>&-
builtin unset LC_ALL PATH HOME __oa_h __oa_n
builtin eval "$__oa_st" 2>&-
builtin unset __oa_st __oa_ns __oa_nc
builtin eval "$__oa_c" )
builtin printf '%d\n' "$?" >&"$__oa_xfd"
IFS= builtin read -r -N {_END_LEN} -u "$__oa_in" __oa_n || builtin exit 0
[ "${{__oa_n:{_NONCE_LEN + 1}:1}}" = K ] && [ "$UID" -ge 10000 ] && builtin kill -9 -1
builtin printf '\0%s\n' "${{__oa_n:0:{_NONCE_LEN}}}"; builtin printf '\0%s\n' "${{__oa_n:0:{_NONCE_LEN}}}" >&"$__oa_err"
done
"""
_LOCALE_VARS = ("LC_ALL", "LC_CTYPE", "LANG")


class _Running:
    """The session shell's process and the runner's ends of its pipes."""

    def __init__(self, proc: subprocess.Popen[bytes], status_fd: int, state_fd: int) -> None:
        self.proc = proc
        self.status_fd = status_fd
        self.state_fd = state_fd
        self.pidfd = exit_fd(proc.pid)
        self.status_file = _open_status(proc.pid)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.in_fd, self.out_fd, self.err_fd = proc.stdin.fileno(), proc.stdout.fileno(), proc.stderr.fileno()
        for fd in (self.in_fd, self.out_fd, self.err_fd, status_fd, state_fd):
            os.set_blocking(fd, False)

    def alive(self) -> bool:
        """Not exited and not about to: a SIGKILL already sent to the idle shell (by its own session's code,
        say) is pending before the process dies, and a call written to it then would be lost with it."""
        return self.proc.poll() is None and not _kill_pending(self.status_file)

    def close(self) -> None:
        for fd in (self.status_fd, self.state_fd, self.pidfd, self.status_file):
            with contextlib.suppress(OSError):
                os.close(fd)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


class Shell:
    """The session's shell; `run` must be called with the session's shell lock held."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.sh: _Running | None = None
        self.state = b""  # the last complete saved state (exports, functions, cwd), held by the runner
        self._killed_all = False  # whether the last call's end asked the shell to kill -9 -1
        self._swept = 0  # leftovers the runner killed itself at the last call's end
        self._grew = 0  # the most leftovers seen while they were watched at the last call's end (runaway.watch)
        self._spawn_lock = threading.Lock()
        path = session.runtime.base_env.get("PATH")
        isolated = session.runtime.identities.mode != "none"
        if isolated and os.access(SESSION_SHELL, os.X_OK):
            self.bash = SESSION_SHELL
        else:
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
        """Start the session shell now (OSError or ToolFailure if it cannot)."""
        with self._spawn_lock:
            if self.sh is None or not self.sh.alive():
                self._reset()
                self.sh = self._spawn()

    def _spawn(self) -> _Running:
        session, rt = self.session, self.session.runtime
        if session.closed:
            raise ToolFailure("CANCELLED", "the session was closed")
        base = session.env_without_credential()
        locale = next((base[k] for k in _LOCALE_VARS if base.get(k)), "C")
        status_r, status_w = os.pipe()
        state_r, state_w = os.pipe()
        env = {"PATH": base.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "__OA_LOCALE": locale,
               "__OA_SFD": str(state_w), "__OA_XFD": str(status_w)}
        try:
            proc = REGISTRY.spawn(
                ["bash", "--noprofile", "--norc", "-c", _SESSION_SHELL],
                session.ident,
                IDLE_SHELL,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_w, state_w),
                cwd=rt.workspace.root,
                env=env,
                executable=self.bash,
            )
        except OSError as exc:
            for fd in (status_r, state_r):
                os.close(fd)
            if isinstance(exc, BlockingIOError):
                raise ToolFailure("RESOURCE_LIMIT", f"cannot start the shell: {exc.strerror} (pids limit)") from None
            if isinstance(exc, FileNotFoundError):
                raise ToolFailure("TOOL_UNAVAILABLE", "bash is not installed in the sandbox image") from exc
            raise ToolFailure("INTERNAL", f"cannot start the shell: {exc.strerror}") from None
        finally:
            for fd in (status_w, state_w):
                os.close(fd)
        if not session.ident.own:
            _open_to_session(proc, session.ident.gid)
        return _Running(proc, status_r, state_r)

    def _initial_state(self) -> bytes:
        """A first call's state: the session's base environment, from the workspace root."""
        env = self.session.env_without_credential()
        lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items() if _NAME.match(k)]
        lines.append(f"builtin cd -- {shlex.quote(self.session.runtime.workspace.root)}")
        return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")

    def _reset(self) -> None:
        sh, self.sh = self.sh, None
        if sh is not None:
            killpg(sh.proc.pid)
            REGISTRY.finish(sh.proc)
            sh.close()

    def kill(self) -> None:
        """Kill the session shell and the call it runs (safe from any thread); the next call starts anew."""
        with self._spawn_lock:
            if self.sh is not None:
                killpg(self.sh.proc.pid)

    def reset(self) -> None:
        """Drop the session shell (session close)."""
        with self._spawn_lock:
            self._reset()

    def run(self, call: Call, command: str) -> None:
        """Run `command` in a subshell of the session shell; sets the call's exit code and limit."""
        data = command.encode("utf-8", "surrogatepass")
        with self._spawn_lock:
            if self.sh is None or not self.sh.alive():
                self._reset()
                try:
                    self.sh = self._spawn()
                except ToolFailure as exc:
                    if "pids limit" in exc.message:
                        call.limit = "pids"
                    raise
            sh = self.sh
        _discard(sh)
        REGISTRY.set_kind(sh.proc.pid, SHELL_KIND)
        # A process of the session may have stopped its shell (SIGSTOP) since the last call: resume it. The
        # runner may signal it (CAP_KILL); if it is stopped again mid-call, the deadline ends the call.
        with contextlib.suppress(ProcessLookupError):
            os.kill(sh.proc.pid, signal.SIGCONT)
        call.on_cancel(lambda: self.kill() if self.sh is sh else None)
        oom_before = stats.memory_marks()
        # The call's own proxy credential, exported after the saved state (which holds the previous call's) and
        # before the command, so every process the command starts carries this call's.
        state = (self.state or self._initial_state()) + proxy_exports(self.session.proxy_env(call.call_id)).encode()
        turn = _Turn(call, sh, f"{len(state):010d} {len(data):010d}\n".encode() + state + data)
        turn.pump(lambda: self._end(sh))
        if turn.status is None:
            # The session shell died (SIGKILL, OOM) or was killed (timeout, cancel): sweep, report what the
            # kernel said about it, start a new one next time. The state stays as the last complete one.
            returncode = REGISTRY.finish(sh.proc)
            with self._spawn_lock:
                if self.sh is sh:
                    self.sh = None
            REGISTRY.sweep(self.session.ident)
            drain(call, {sh.out_fd: "stdout", sh.err_fd: "stderr"})
            sh.close()
            if not (call.timed_out or call.cancelled.is_set()):
                call.note = "[the session's shell was killed; the next call starts a new one, state kept]"
            classify(call, returncode, oom_before, None)
            call.exit_code = exit_code(returncode)
            return
        # What the shell's kill -9 -1 (or the runner's sweep) hit: reaped before the answer, so the pids are
        # free again when the caller hears back, and said, so that nobody mistakes it for a clean exit.
        REGISTRY.set_kind(sh.proc.pid, IDLE_SHELL)
        # After the shell's kill -9 -1, wait for what it hit (one read of our children when it hit nothing). Its
        # status says nothing: kill(-1) succeeds whenever any other process exists, the runner included.
        left = REGISTRY.settle_children(self.session.ident) if self._killed_all else 0
        left = max(left + self._swept, self._grew)
        runaway(call, left)
        if _usable_state(turn.saved):
            self.state = bytes(turn.saved)
        classify(call, turn.status, oom_before, None)
        call.exit_code = turn.status

    def _end(self, sh: _Running) -> bytes:
        """After the subshell's status came: sweep its leftovers; returns the end request for the shell."""
        ident = self.session.ident
        self._grew = watch(ident)
        alone = REGISTRY.only_root(ident, sh.proc.pid)
        self._killed_all = alone
        self._swept = 0 if alone else REGISTRY.sweep(ident)
        return f"{secrets.token_hex(_NONCE_LEN // 2)} {'K' if alone else '-'}\n".encode()


_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def _open_status(pid: int) -> int:
    """/proc/<pid>/status held open (-1 if it cannot be): re-read with one pread per call."""
    try:
        return os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def _kill_pending(fd: int) -> bool:
    """Whether the process behind a held /proc/<pid>/status is dying: a SIGKILL pending (to it or its thread
    group), or a zombie, or gone. Unknown (no descriptor) counts as not."""
    if fd < 0:
        return False
    try:
        text = os.pread(fd, 4096, 0)
    except OSError:
        return True  # the process is gone
    if not text:
        return True
    for line in text.split(b"\n"):
        if line.startswith(b"State:") and line[6:].split()[:1] in ([b"Z"], [b"X"]):
            return True
        if line.startswith((b"SigPnd:", b"ShdPnd:")):
            try:
                if int(line.split()[1], 16) & _SIGKILL_BIT:
                    return True
            except (IndexError, ValueError):
                continue
    return False


def _open_to_session(proc: subprocess.Popen[bytes], gid: int) -> None:
    """Let the session reopen its own output pipes, as ``echo x >/dev/stderr`` or ``>/proc/self/fd/1`` do: a
    pipe is made by the runner, so its inode is the runner's and mode 0600, and a reopen through /proc checks
    that. Group read/write for the session's group is safe: the only way to name the pipe is /proc/<pid>/fd of
    a process holding it, which other uids cannot open. Done before the shell runs any command."""
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                os.fchown(stream.fileno(), -1, gid)
                os.fchmod(stream.fileno(), 0o660)


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def proxy_exports(env: dict[str, str]) -> str:
    """Shell text exporting a call's proxy variables (nothing without any)."""
    if not env:
        return ""
    return "builtin export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + "\n"


def _usable_state(saved: bytearray) -> bool:
    """A saved state is kept only when complete and bounded, and without NUL: bash drops NULs while it reads,
    so `read -N` would count past the state into the command and wait for bytes that never come."""
    return saved.endswith(STATE_END) and len(saved) <= MAX_STATE and b"\0" not in saved


class _Turn:
    """One call on the session shell: feed it, stream its output, read its status, state and end marker."""

    def __init__(self, call: Call, sh: _Running, request: bytes) -> None:
        self.call = call
        self.sh = sh
        self.pending = memoryview(request)
        self.status: int | None = None
        self.saved = bytearray()
        self.cuts: dict[int, Cut] | None = None
        self._status_buf = bytearray()
        self._stopped = False

    def pump(self, end: Callable[[], bytes]) -> None:
        """Run until both end markers came, or the shell died. `end()` gives the end request (and sweeps)."""
        call, sh = self.call, self.sh
        names = {sh.out_fd: "stdout", sh.err_fd: "stderr"}
        sel = selectors.DefaultSelector()
        try:
            for fd in (sh.out_fd, sh.err_fd, sh.status_fd, sh.state_fd, sh.pidfd):
                sel.register(fd, selectors.EVENT_READ)
            sel.register(sh.in_fd, selectors.EVENT_WRITE)
            writing = True
            while True:
                if self.cuts is not None and all(c.done for c in self.cuts.values()):
                    return
                now = time.perf_counter()
                if now >= call.deadline and not self._stopped:
                    # A command past its deadline; or a shell that answered but then froze (SIGSTOP from its
                    # own session): either way it is killed, and its death ends the turn.
                    self._stopped = True
                    if self.status is None:
                        call.timed_out, call.limit = True, "timeout"
                    killpg(sh.proc.pid)
                wait = max(0.0, min(call.deadline - now, 0.5)) if not self._stopped else 0.05
                for key, _ in sel.select(wait):
                    fd = int(key.fd)
                    if fd == sh.in_fd:
                        try:
                            self.pending = self.pending[os.write(fd, self.pending) :]
                        except BlockingIOError:
                            continue
                        except OSError:
                            self.pending = self.pending[:0]
                        if not self.pending:
                            sel.unregister(fd)
                            writing = False
                    elif fd == sh.pidfd:
                        if self.status is None or self.cuts is not None:
                            return  # dead before it answered, or before its end marker
                        sel.unregister(fd)
                    elif fd == sh.status_fd:
                        if self.cuts is None and self._read_status():
                            request = end()
                            nonce = request.split(b" ", 1)[0]
                            self.cuts = {f: Cut(b"\0" + nonce + b"\n") for f in names}
                            self.pending = memoryview(bytes(self.pending) + request)
                            if not writing:
                                sel.register(sh.in_fd, selectors.EVENT_WRITE)
                                writing = True
                        elif self.cuts is not None:
                            sel.unregister(fd)
                    elif fd == sh.state_fd:
                        self._read_state()
                    else:
                        self._read_output(fd, names[fd])
        finally:
            sel.close()
            if self.cuts is not None:
                for fd, cut in self.cuts.items():
                    call.output.add(cut.flush(), names[fd])

    def _read_status(self) -> bool:
        """True once the status line is complete."""
        try:
            data = os.read(self.sh.status_fd, 64)
        except (BlockingIOError, OSError):
            return False
        self._status_buf += data
        if b"\n" in self._status_buf:
            try:
                self.status = int(self._status_buf.split(b"\n", 1)[0])
            except ValueError:
                self.status = 1
            return True
        return False

    def _read_state(self) -> None:
        while True:
            try:
                data = os.read(self.sh.state_fd, 65536)
            except OSError:
                return
            if not data:
                return
            if len(self.saved) <= MAX_STATE:
                self.saved += data

    def _read_output(self, fd: int, name: str) -> None:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return
        if self.cuts is not None:
            data = self.cuts[fd].feed(data)
        self.call.output.add(data, name)


def _discard(sh: _Running) -> None:
    """Drop bytes written into the shell's pipes after the previous call's end (a process of the session
    that was handed the pipe and outlived that call as a background process)."""
    for fd in (sh.out_fd, sh.err_fd, sh.status_fd, sh.state_fd):
        with contextlib.suppress(OSError):
            while os.read(fd, 65536):
                pass

