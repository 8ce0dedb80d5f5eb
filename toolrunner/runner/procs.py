"""Every process the runner starts, and the guarantee that none outlives the call that made it.

The runner is a child subreaper, so whatever a call leaves behind (``cmd &``, ``nohup``, ``setsid``, a double
fork) is re-parented to the runner when its parent exits. Each process we start carries an environment
marker ``OPENANALYST_CALL=<token>``; at the end of a call we kill its process group, then every child of the
runner that we did not start ourselves and whose marker is not that of a call still running — with its whole
subtree — and reap the zombies. Processes without a marker (``env -i``) are treated as leftovers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable

MARKER = "OPENANALYST_CALL"
_PR_SET_CHILD_SUBREAPER = 36


class Registry:
    """Which pids we wait on ourselves and which markers belong to something still alive."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracked: set[int] = set()
        self._tokens: set[str] = set()
        self.me = os.getpid()

    def become_subreaper(self) -> bool:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
        except (OSError, AttributeError):
            return False

    def add_token(self, token: str) -> None:
        with self._lock:
            self._tokens.add(token)

    def drop_token(self, token: str) -> None:
        with self._lock:
            self._tokens.discard(token)

    def track(self, pid: int) -> None:
        with self._lock:
            self._tracked.add(pid)

    def untrack(self, pid: int) -> None:
        with self._lock:
            self._tracked.discard(pid)

    def spawn(self, argv: list[str], token: str, **kwargs: object) -> subprocess.Popen[bytes]:
        """Popen in a new session; the pid is tracked so the zombie reaper leaves it to Popen.wait()."""
        with self._lock:
            # Holding the lock across fork keeps the sweeper from mistaking the new child for a leftover.
            proc = subprocess.Popen(argv, start_new_session=True, close_fds=True, **kwargs)  # type: ignore[call-overload]
            self._tracked.add(proc.pid)
        return proc  # type: ignore[no-any-return]

    def finish(self, proc: subprocess.Popen[bytes]) -> int:
        """Kill what is left of `proc`'s group, wait for it, stop tracking it; returns its return code."""
        killpg(proc.pid)
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = -9
        self.untrack(proc.pid)
        return code

    def sweep(self, rounds: int = 20) -> int:
        """Kill leftovers (see module doc) until none is found; returns how many were killed."""
        killed = 0
        for _ in range(rounds):
            with self._lock:
                untracked = [pid for pid in children(self.me) if pid not in self._tracked]
                victims = [p for p in untracked if marker(p) not in self._tokens and not is_zombie(p)]
            for pid in victims:
                for p in [pid, *descendants(pid)]:
                    _kill(p)
                    killed += 1
            _waitpid_nohang(untracked)  # collects the zombies; a live child is left alone
            if not victims:
                break
        return killed

    def sweep_orphans(self) -> int:
        """`sweep`, but only when the main thread has a child we did not start: orphans are re-parented to
        the subreaper's first live thread (the main one), so one read usually shows there is nothing to do."""
        if _HAS_CHILDREN_FILE:
            found = main_thread_children(self.me)
            with self._lock:
                if all(pid in self._tracked for pid in found):
                    return 0
        return self.sweep()

    def kill_marked(self, prefix: str) -> int:
        """Kill every process of ours whose marker starts with `prefix` (session close). Only the runner's
        own descendants are candidates (as subreaper it inherits every orphan of its calls): a runner that
        shares a PID namespace with others — on a host, in tests — must never touch their processes."""
        killed = 0
        for _ in range(5):
            pids = [p for p in descendants(self.me) if (marker(p) or "").startswith(prefix)]
            if not pids:
                break
            for pid in pids:
                _kill(pid)
                killed += 1
        self.reap()
        return killed

    def reap(self) -> None:
        """Collect zombies among our children that no Popen is waiting for."""
        with self._lock:
            untracked = [pid for pid in children(self.me) if pid not in self._tracked]
        _waitpid_nohang(untracked)

    def start_reaper(self, interval: float = 1.0) -> None:
        def loop() -> None:
            while True:
                time.sleep(interval)
                self.reap()

        threading.Thread(target=loop, name="reaper", daemon=True).start()


REGISTRY = Registry()


def _waitpid_nohang(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def exit_fd(pid: int) -> int:
    """An fd that turns readable when child `pid` exits.

    A pidfd; or, where pidfd_open is refused (an older seccomp profile, gVisor), a pipe closed by a thread
    that waits with WNOWAIT, leaving the reaping to Popen.
    """
    try:
        return os.pidfd_open(pid)
    except OSError:
        pass
    r, w = os.pipe()

    def wait() -> None:
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        finally:
            os.close(w)

    threading.Thread(target=wait, name=f"exit-{pid}", daemon=True).start()
    return r


def killpg(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_tree(pid: int, *, keep_root: bool = False) -> None:
    """Kill `pid`'s process group and every descendant (found before the root dies, since its orphans move
    to the subreaper); with `keep_root`, only the descendants (a session's idle shell keeps running)."""
    if keep_root and not main_thread_children(pid):
        return  # the usual case, at the cost of one read
    for round_ in range(5):
        victims = [p for p in descendants(pid) if not is_zombie(p)]
        if round_ == 0 and not keep_root:
            killpg(pid)
            _kill(pid)
        if not victims:
            return
        for p in victims:
            _kill(p)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


_HAS_CHILDREN_FILE = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def children(pid: int) -> list[int]:
    """Direct children of `pid`: /proc/<pid>/task/*/children (one file per thread), or where the kernel
    (or gVisor) has no such file, a scan of every process's parent pid."""
    if not _HAS_CHILDREN_FILE:
        return [p for p in all_pids() if ppid(p) == pid]
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            continue
    return out


def main_thread_children(pid: int) -> list[int]:
    """Children of a single-threaded process such as bash: one file instead of a listing of its threads."""
    if not _HAS_CHILDREN_FILE:
        return children(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return children(pid)


def ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rfind(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    stack = [pid]
    while stack and len(out) < 100_000:
        for child in children(stack.pop()):
            out.append(child)
            stack.append(child)
    return out


def all_pids() -> Iterable[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def marker(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return None
    key = MARKER.encode() + b"="
    for item in env.split(b"\0"):
        if item.startswith(key):
            return item[len(key) :].decode("utf-8", "replace")
    return None


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z"


def exit_code(returncode: int) -> int:
    """Shell convention: a process killed by signal N exits with 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def log(msg: str) -> None:
    """Diagnostics go to stderr only: stdout carries frames."""
    print(f"runner: {msg}", file=sys.stderr, flush=True)
