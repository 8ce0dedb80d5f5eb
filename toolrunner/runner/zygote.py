"""The runner's side of the forking interpreter (``zygote_main.py``): one per session uid that runs `python`.

Starting CPython is most of an empty `python` call (20-60 ms in a container with half a CPU, docs/speed.md);
forking a started one costs about a millisecond. A zygote is started as the session's uid after its first
`python` call has answered, and from then on each call's process is forked from it: a fresh interpreter
state per call (the zygote never runs session code), the same limits, deadline, cwd, environment, stdin,
output pipes and caps as a process the runner starts, and an exit status from the runner's own ``waitpid``
(the call's process is re-parented to the runner before its pid is reported). The zygote is a tracked root
of its uid that protects the uid from a full sweep only while nothing was left behind (like an idle session
shell), so a call that leaves processes loses the zygote with them and the next call starts a new one.

Anything unexpected (no answer within FORK_S, a pid that is not our child of the session's uid, a zygote
that says it was tampered with) stops the zygote and the call runs as a process of its own, as before.
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from toolrunner.runner.identity import Ident
from toolrunner.runner.procs import IDLE_SHELL, REGISTRY, exit_fd, killpg, output_pipe, ppid, uid_of

SOURCE = Path(__file__).with_name("zygote_main.py").read_text(encoding="utf-8")
START_S = 15.0  # a new zygote's start (it is not waited for by any call)
FORK_S = 2.0  # one fork request; the registry is held meanwhile
MAX_REQUEST = 60_000  # the zygote reads requests of up to 64 KiB: larger environments run as before


class Forked:
    """A call's process forked by a zygote, now the runner's child: the part of Popen that `execute` uses."""

    def __init__(self, pid: int, stdout_fd: int, stderr_fd: int) -> None:
        self.pid = pid
        self.stdout = os.fdopen(stdout_fd, "rb", buffering=0)
        self.stderr = os.fdopen(stderr_fd, "rb", buffering=0)
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        if timeout is not None:
            fd = exit_fd(self.pid)
            try:
                if not select.select([fd], [], [], timeout)[0]:
                    raise subprocess.TimeoutExpired(str(self.pid), timeout)
            finally:
                os.close(fd)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


class Zygote:
    """One started zygote of one uid, and the socket only the runner holds to it."""

    def __init__(self, ident: Ident, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.ident = ident
        self.proc = proc
        self.sock = sock
        self._lock = threading.Lock()
        self._reaping = threading.Lock()  # held to reap the zygote, and to signal it (_signal)

    @classmethod
    def start(cls, ident: Ident, python: str, env: dict[str, str]) -> Zygote | None:
        """A ready zygote of `ident`, or None (pids or memory exhausted, or it did not start in time)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = REGISTRY.spawn([python, "-u", "-s", "-c", SOURCE], ident, IDLE_SHELL, stdin=theirs,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", env=env)
        except OSError:
            mine.close()
            return None
        finally:
            theirs.close()
        zygote = cls(ident, proc, mine)
        try:
            threading.Thread(target=zygote._reap, name=f"zygote-{proc.pid}", daemon=True).start()
            ready = zygote._line(START_S)
        except RuntimeError:  # no thread to reap it (the pids limit): not worth keeping
            zygote.stop()
            REGISTRY.finish(proc)
            mine.close()
            return None
        except (OSError, ValueError):  # it died (and its socket was closed) before it was ready
            ready = None
        if ready != b"ready":
            zygote.stop()
            return None
        return zygote

    def _reap(self) -> None:
        """Wait for the zygote from the start, so that once killed (a sweep, a session close) it is reaped
        at once and its uid is free of it. It is reaped under `_reaping`, after a wait that leaves it a
        zombie, so that `_signal` never reaches a pid that was freed (and perhaps given to another session)."""
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        with self._reaping:
            self.proc.wait()
        REGISTRY.untrack(self.proc.pid)
        self.sock.close()

    def alive(self) -> bool:
        return self.proc.returncode is None  # set once _reap has reaped it (a poll here could reap it first)

    def _line(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return None
            chunk = self.sock.recv(64)
            if not chunk:
                return None
            buf += chunk
        return buf[:-1]

    def fork(self, cwd: str, path: str, env: dict[str, str]) -> Forked | None:
        """The call's process for code file `path`, started in `cwd` with `env`; None if this zygote cannot."""
        request = b"\0".join(os.fsencode(x) for x in (cwd, path, _env_block(env))) + b"\0"
        if len(request) > MAX_REQUEST:
            return None
        with self._lock:
            if not self.alive():
                return None
            out_r, out_w = output_pipe()
            err_r, err_w = output_pipe()
            null = os.open(os.devnull, os.O_RDONLY)
            pid = None
            try:
                self._signal(signal.SIGCONT)  # a process of the session may have stopped it
                with REGISTRY.adopting() as track:
                    fds = array.array("i", [null, out_w, err_w])
                    self.sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                    reply = self._line(FORK_S)
                    if reply is not None and reply.isdigit() and self._is_call(int(reply)):
                        pid = int(reply)
                        track(pid, self.ident)
            except (OSError, ValueError):  # ValueError: the socket closed under us (the zygote was killed)
                pid = None
            finally:
                for fd in (out_w, err_w, null):
                    os.close(fd)
        if pid is None:
            os.close(out_r)
            os.close(err_r)
            self.stop()
            return None
        return Forked(pid, out_r, err_r)

    def _is_call(self, pid: int) -> bool:
        """The reported pid is our child and runs as the session (a check, not a trust: see the module doc)."""
        return pid > 1 and ppid(pid) == os.getpid() and uid_of(pid) == self.ident.uid

    def stop(self) -> None:
        self._signal(signal.SIGKILL, group=True)

    def _signal(self, sig: int, *, group: bool = False) -> None:
        """Send `sig` to the zygote (and its process group) unless it was reaped: its pid is its own till then."""
        with self._reaping:
            if self.proc.returncode is not None:
                return
            if group:
                killpg(self.proc.pid, sig)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)


def _env_block(env: dict[str, str]) -> str:
    """The environment as NAME=VALUE lines (names and values hold no newline or NUL, else not sent)."""
    return "\n".join(f"{k}={v}" for k, v in env.items() if "\n" not in k + v and "=" not in k)


class Zygotes:
    """The zygote of each uid that runs `python`: started after a call has answered, used by the next."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_uid: dict[int, Zygote] = {}
        self._starting: set[int] = set()

    def get(self, ident: Ident) -> Zygote | None:
        with self._lock:
            zygote = self._by_uid.get(ident.uid)
            if zygote is not None and not zygote.alive():
                del self._by_uid[ident.uid]
                return None
            return zygote

    def _claim(self, ident: Ident) -> bool:
        """Whether the caller should start `ident`'s zygote (none lives and none is starting)."""
        with self._lock:
            if ident.uid in self._starting or (ident.uid in self._by_uid and self._by_uid[ident.uid].alive()):
                return False
            self._starting.add(ident.uid)
            return True

    def _started(self, ident: Ident, zygote: Zygote | None) -> None:
        with self._lock:
            self._starting.discard(ident.uid)
            if zygote is not None:
                self._by_uid[ident.uid] = zygote

    def _start(self, ident: Ident, python: str, env: dict[str, str]) -> None:
        """Start the zygote the caller claimed and record it (or that none came)."""
        zygote = None
        try:
            zygote = Zygote.start(ident, python, env)
        finally:
            self._started(ident, zygote)

    def start_now(self, ident: Ident, python: str, env: dict[str, str]) -> None:
        """Start a zygote for `ident` on this thread and wait until it is ready (a spare's filler)."""
        if self._claim(ident):
            self._start(ident, python, env)

    def start_later(self, ident: Ident, python: str, env: dict[str, str]) -> None:
        """Start a zygote for `ident` on a thread of its own, unless one lives or is starting."""
        if not self._claim(ident):
            return
        try:
            threading.Thread(target=self._start, args=(ident, python, env), name=f"zygote-start-{ident.uid}",
                             daemon=True).start()
        except RuntimeError:  # the pids limit: no zygote, calls run as processes of their own
            self._started(ident, None)


ZYGOTES = Zygotes()
