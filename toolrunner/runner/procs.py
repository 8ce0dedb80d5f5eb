"""Every process the runner starts, and the guarantee that none outlives the call that made it.

Membership is the process's uid, which it cannot change (no capabilities, no-new-privileges), plus the
runner's own record of which processes are *roots* of live work: calls in flight, background processes,
REPLs, spare shells. A process cannot hide from that: ``setsid``, double forks, ``env -i`` and copied
environments change neither its uid nor which pids the runner started.

At the end of a call, ``sweep`` kills what the call's uid left behind. Where the uid is the session's own
(mode "uid") and none of its other work is live, one ``kill(-1, SIGKILL)`` sent *as that uid* kills every
process of it at once; the kernel delivers it under the task-list lock, so a fork bomb cannot fork past it.
Otherwise it kills every untracked child of the runner (as child subreaper the runner inherits every orphan)
of that uid, with its subtree, until none is left. Zombies are reaped before the answer, so the pids limit is
free again when the caller hears back.
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
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from toolrunner.runner import heldfile
from toolrunner.runner.identity import (
    Ident,
    Identities,
    drop_all_capabilities,
    kill_all_of,
)

_PR_SET_CHILD_SUBREAPER = 36
SETTLE_S = 2.0  # how long a sweep waits for killed processes to be gone before answering anyway
SPARE = "spare"  # roots of this kind do not protect their uid from a full sweep (they are restarted)
IDLE_SHELL = "idle-shell"  # a session shell between calls: protects its uid unless something was left behind


class Waitable(Protocol):
    """A child of ours we wait for: a Popen, or a call's process forked by a zygote (runner.zygote.Forked)."""

    pid: int

    def wait(self, timeout: float | None = None) -> int: ...


class Registry:
    """Which pids we wait on ourselves (the reaper leaves them alone), and the live roots per uid."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracked: set[int] = set()
        self._roots: dict[int, tuple[int, str]] = {}  # pid -> (uid, kind)
        self.me = os.getpid()
        self.identities = Identities("none", os.getgid())

    def become_subreaper(self) -> bool:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
        except (OSError, AttributeError):
            return False

    def untrack(self, pid: int) -> None:
        with self._lock:
            self._tracked.discard(pid)
            self._roots.pop(pid, None)

    @contextlib.contextmanager
    def adopting(self) -> Iterator[Callable[[int, Ident], None]]:
        """Hold off the reaper and the sweeps while a process we did not fork becomes our child (a call's
        process forked by a session's zygote and re-parented to us): the `track(pid, ident)` it yields records
        the pid as a tracked root of kind "call" before anything else may reap or kill it."""

        def track(pid: int, ident: Ident) -> None:
            self._tracked.add(pid)
            self._roots[pid] = (ident.uid, "call")

        with self._lock:
            yield track

    def spawn(self, argv: list[str], ident: Ident, kind: str = "call", **kwargs: object) -> subprocess.Popen[bytes]:
        """Popen as `ident` in a new session; the pid is tracked and recorded as a root of `kind`."""
        with self._lock:
            # Holding the lock across fork keeps the sweeper from mistaking the new child for a leftover.
            proc = subprocess.Popen(  # type: ignore[call-overload]
                argv, start_new_session=True, close_fds=True, **ident.popen_kwargs(), **kwargs
            )
            self._tracked.add(proc.pid)
            self._roots[proc.pid] = (ident.uid, kind)
        return proc  # type: ignore[no-any-return]

    def set_kind(self, pid: int, kind: str) -> None:
        with self._lock:
            if pid in self._roots:
                self._roots[pid] = (self._roots[pid][0], kind)

    def finish(self, proc: Waitable) -> int:
        """Kill what is left of `proc`'s group, wait for it, stop tracking it; returns its return code."""
        killpg(proc.pid)
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = -9
        self.untrack(proc.pid)
        return code

    def _blocking_roots(self, uid: int) -> list[int]:
        return [pid for pid, (u, kind) in self._roots.items() if u == uid and kind != SPARE]

    def only_root(self, ident: Ident, pid: int) -> bool:
        """Whether `pid` is the only live work of `ident`'s uid, and that uid is the session's alone: then
        that process may kill every other process of the uid (kill(-1) spares the caller)."""
        if not self.identities.exclusive() or ident.own:
            return False
        with self._lock:
            return self._blocking_roots(ident.uid) == [pid]

    def settle_children(self, ident: Ident) -> int:
        """Reap until no untracked child of ours of `ident`'s uid is left: a killed process's children are
        ours (we are their subreaper) before it can be reaped itself, so an empty list means all are gone.
        Returns how many were reaped here (a lower bound: the background reaper may take some).
        A call's leftovers are our children from the moment their parent exits, before its parent can reap
        it, so when none is listed now there is nothing to wait for: the common case costs one read."""
        if not self._untracked_children_left(ident.uid):
            return 0
        return self._settle(lambda: self._untracked_children_left(ident.uid))

    def sweep(self, ident: Ident) -> int:
        """Kill what the work of `ident` left behind (see module doc); returns how many were found."""
        if self.identities.exclusive() and not ident.own:
            with self._lock:
                kinds = {self._roots[pid][1] for pid in self._blocking_roots(ident.uid)}
            if not kinds:
                return self.kill_uid(ident)
            if kinds == {IDLE_SHELL}:
                # Only the session's idle shell lives: if the call left anything (as the subreaper we are the
                # parent of every tree a dead root left), kill the uid at once, shell included (the next bash
                # call starts a new one); if not, there is nothing to do.
                return self.kill_uid(ident) if self._untracked_children_left(ident.uid) else 0
            # Only when something was left behind (orphans are ours): the common case costs one read.
            return self._sweep_frozen(ident.uid) if self._untracked_children_left(ident.uid) else 0
        return self._sweep_orphans(None if not self.identities.exclusive() else ident.uid)

    def kill_uid(self, ident: Ident) -> int:
        """Every process of `ident`'s uid, at once, including roots; waits until they are gone."""
        if ident.own:
            return self._sweep_orphans(None)
        found = kill_all_of(ident.uid)
        if found is None:
            found = self._kill_uid_forked(ident)
        if found:
            return max(1, self._settle(lambda: any(uid_of(p) == ident.uid for p in all_pids())))
        return 0

    def _kill_uid_forked(self, ident: Ident) -> int:
        """kill(-1) from a child switched to the uid: where the thread's own switch is not available."""
        with self._lock:
            pid = os.fork()
            if pid == 0:  # the child: only system calls from here to _exit
                code = 2
                try:
                    os.setresuid(ident.uid, ident.uid, ident.uid)
                    drop_all_capabilities()  # with CAP_KILL kill(-1) would reach every process
                    try:
                        os.kill(-1, signal.SIGKILL)
                        code = 1
                    except ProcessLookupError:
                        code = 0
                finally:
                    os._exit(code)
            self._tracked.add(pid)
        try:
            _, status = os.waitpid(pid, 0)
        finally:
            self.untrack(pid)
        code = os.waitstatus_to_exitcode(status)
        if code == 2:
            log(f"could not kill the processes of uid {ident.uid}")
        return 1 if code == 1 else 0

    def _sweep_frozen(self, uid: int) -> int:
        """The process-by-process sweep for a uid that also has live work (a background process, the REPL,
        another call): every process of the uid is first stopped with one kill(-1, SIGSTOP) sent as that uid
        (atomic, so nothing forks past the sweep), the leftovers are killed, and the rest is continued."""
        if kill_all_of(uid, signal.SIGSTOP) is None:
            return self._sweep_orphans(uid)
        try:
            return self._sweep_orphans(uid)
        finally:
            kill_all_of(uid, signal.SIGCONT)

    def _sweep_orphans(self, uid: int | None, rounds: int = 20) -> int:
        """Kill untracked children of the runner (of `uid`, or of any uid) with their subtrees.

        A round that found nothing alive but a zombie (or a pid already gone) is not the last: that process's
        children were re-parented to us as it exited, possibly after this round's listing of our children (a
        listing of several per-thread files is not atomic), so the next round looks again. Stopping at the first round
        without a live victim let a pid-hopping leftover (fork, exit, fork, ...) survive a frozen sweep and run
        on after its SIGCONT."""
        killed = 0
        for _ in range(rounds):
            with self._lock:
                untracked = [pid for pid in children(self.me) if pid not in self._tracked]
            victims = [p for p in untracked if not is_zombie(p) and (uid is None or uid_of(p) == uid)]
            exited = [p for p in untracked if p not in victims and (uid is None or uid_of(p) in (uid, None))]
            for pid in victims:
                for p in [pid, *descendants(pid)]:
                    _kill(p)
                    killed += 1
            _waitpid_nohang(untracked)  # collects the zombies; a live child is left alone
            if not victims and not exited:
                break
        if killed:
            self._settle(lambda: self._untracked_children_left(uid))
        return killed

    def tracked(self) -> frozenset[int]:
        """The pids we wait on ourselves (roots of live work among them)."""
        with self._lock:
            return frozenset(self._tracked)

    def untracked_children_left(self, uid: int | None) -> bool:
        """Whether a child of ours that we did not start (an orphan of some call) of `uid` is alive."""
        return self._untracked_children_left(uid)

    def _untracked_children_left(self, uid: int | None) -> bool:
        # Orphans are re-parented to the subreaper's first live thread (the main one): one read, usually.
        with self._lock:
            left = [p for p in main_thread_children(self.me) if p not in self._tracked]
        return any(uid is None or uid_of(p) in (uid, None) for p in left)

    def _settle(self, busy: Callable[[], bool]) -> int:
        """Reap until `busy()` turns false or SETTLE_S passes: killed processes free their pids first.
        Returns how many were reaped."""
        deadline = time.monotonic() + SETTLE_S
        reaped = 0
        while True:
            reaped += self.reap(main_thread=True)
            if not busy() or time.monotonic() >= deadline:
                return reaped
            time.sleep(0.002)

    def reap(self, *, main_thread: bool = False) -> int:
        """Collect zombies among our children that no Popen is waiting for; returns how many. Orphans come to
        the main thread, so after a kill that one thread's list is enough (one read instead of one a thread)."""
        with self._lock:
            found = main_thread_children(self.me) if main_thread else children(self.me)
            untracked = [pid for pid in found if pid not in self._tracked]
        return _waitpid_nohang(untracked)

    def start_reaper(self, interval: float = 1.0) -> None:
        def loop() -> None:
            while True:
                time.sleep(interval)
                self.reap()

        threading.Thread(target=loop, name="reaper", daemon=True).start()


REGISTRY = Registry()


def _waitpid_nohang(pids: list[int]) -> int:
    reaped = 0
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            reaped += os.waitpid(pid, os.WNOHANG)[0] == pid
    return reaped


def output_pipe() -> tuple[int, int]:
    """A pipe for a call's stdout or stderr: (read end, write end). The runner creates it, so its inode
    belongs to the runner's uid with mode 0600, and a call's process (a session uid) could not reopen its own
    output by name: ``open('/dev/stdout')`` (``/proc/self/fd/1``) failed with EACCES in python and node. The
    write end's inode gets "others may write": reopening through /proc needs access to the holder's /proc
    entry, which only processes of the same session have (the runner's own is closed to them, docs/
    runner-trust.md), and they could write to the pipe through the descriptor anyway; nobody may read it."""
    r, w = os.pipe()
    os.fchmod(w, 0o602)
    return r, w


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


def kill_tree(pid: int) -> None:
    """Kill `pid`'s process group and every descendant (found before the root dies, since its orphans move
    to the subreaper)."""
    for round_ in range(5):
        victims = [p for p in descendants(pid) if not is_zombie(p)]
        if round_ == 0:
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
    """Children of a single-threaded process such as bash: one file instead of a listing of its threads. The
    runner's own list (read after every call) is a held descriptor (heldfile), another process's is opened."""
    if not _HAS_CHILDREN_FILE:
        return children(pid)
    path = f"/proc/{pid}/task/{pid}/children"
    try:
        if pid == os.getpid():
            text = heldfile.read(path)
            if text is None:
                return children(pid)
        else:
            with open(path, "rb") as f:
                text = f.read()
        return [int(x) for x in text.split()]
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


def uid_of(pid: int) -> int | None:
    """The real uid of `pid` (None once it is gone); /proc/<pid>/status is readable whatever the uid."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
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
