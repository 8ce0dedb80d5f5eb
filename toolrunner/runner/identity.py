"""Who runs what inside the sandbox: the runner's own uid, and the uid each session's processes run under.

The container starts the runner as root with only CAP_SETUID, CAP_SETGID and CAP_KILL. ``drop_to_runner``
moves it to its own uid at once, keeping those three (the uid switch would clear them without
PR_SET_KEEPCAPS), and makes it non-dumpable, so that no tool process can signal it, trace it or open its
``/proc`` entries. Every tool process starts with oom_score_adj 1000 and inside the guard's Landlock domain,
which keeps it from writing under /proc and so from lowering that value (guard.py).

Tool processes get a uid per session (``mode="uid"``), one uid for all sessions (``"shared"``: a workspace
owned by a person), or the runner's own (``"none"``: a runner on a host, for tests and development, which
isolates nothing). See docs/runner-trust.md.

The shared uid may be 0 (a root-owned owner workspace, docs/workspace-quota.md §2): such a process runs as uid
0 with no capability at all. A switch of the euid to 0 copies the permitted set into the effective one, and
an exec by uid 0 grants the bounding set, so a uid-0 child empties its capability sets after the switch and
before exec (``no-new-privileges`` then keeps them empty across exec), and ``kill_all_of`` never switches a
thread of the runner to uid 0.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import platform
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from toolrunner.runner.guard import restrict_self

RUNNER_UID = 999
KILLER_UID = 998  # the real uid of the runner's killing thread while it acts as a session: nobody else's
POOL_START, POOL_SIZE = 10000, 1000
CAP_KILL, CAP_SETGID, CAP_SETUID = 5, 6, 7
KEPT_CAPS = (1 << CAP_KILL) | (1 << CAP_SETGID) | (1 << CAP_SETUID)
MODES = ("uid", "shared", "none")
UMASK = 0o002  # files a session creates stay writable by the workspace group, i.e. by the other sessions

_PR_SET_DUMPABLE, _PR_SET_KEEPCAPS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 4, 8, 47, 4
_CAPABILITY_V3 = 0x20080522
_libc = ctypes.CDLL(None, use_errno=True)


class IdentityError(Exception):
    """The runner could not take its own identity; it must not serve calls then."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise IdentityError(f"{what} failed: {os.strerror(err)}")


def _capset(effective: int, permitted: int) -> None:
    header = _CapHeader(_CAPABILITY_V3, 0)
    data = (_CapData * 2)(_CapData(effective, permitted, 0), _CapData(0, 0, 0))
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def drop_all_capabilities() -> None:
    """Empty every capability set of this (child) process, e.g. before it signals as a tool uid."""
    _capset(0, 0)


# Built in advance: as little as possible runs in a child between fork and exec.
_EMPTY_HEADER = _CapHeader(_CAPABILITY_V3, 0)
_EMPTY_DATA = (_CapData * 2)(_CapData(0, 0, 0), _CapData(0, 0, 0))
_OOM_PATH = b"/proc/self/oom_score_adj"
OOM_SCORE_ADJ = b"1000"  # tool processes are the OOM killer's first choice
_tool_guard = -1  # the Landlock ruleset every tool process enters (guard.py); -1 until the runner built it


def set_tool_guard(ruleset_fd: int) -> None:
    """Called once at start with guard.build()'s fd: from then on every tool process enters its domain."""
    global _tool_guard
    _tool_guard = ruleset_fd


def tool_guard_active() -> bool:
    return _tool_guard >= 0


def _child_setup() -> None:
    """preexec_fn of every tool process (after the uid switch, before exec): oom_score_adj 1000, then the
    guard's domain, so that nothing the process runs can write under /proc and so lower the value (guard.py);
    a uid-0 process then empties its capability sets. A failure raises, so Popen fails and nothing runs
    unpinned, unguarded or with a capability.

    Writing /proc/self needs the new uid to own it, i.e. a dumpable process. While dumpable the child still
    holds the runner's capabilities, which no tool process has, so the kernel refuses any ptrace or
    /proc/<pid>/fd access to it (cap_ptrace_access_check) — and it is non-dumpable again before they go.
    A uid-0 child needs the emptying: its euid switch to 0 put the permitted set in effect, and an exec as
    root would grant the bounding set (no-new-privileges keeps an empty set empty across exec).
    """
    if _libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_DUMPABLE failed")
    fd = os.open(_OOM_PATH, os.O_WRONLY)
    try:
        os.write(fd, OOM_SCORE_ADJ)
    finally:
        os.close(fd)
    if _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_DUMPABLE failed")
    if _tool_guard >= 0 and restrict_self(_tool_guard) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    if os.geteuid() == 0 and _libc.capset(ctypes.byref(_EMPTY_HEADER), _EMPTY_DATA) != 0:
        raise OSError(ctypes.get_errno(), "capset to empty failed")


def drop_to_runner(workspace_gid: int, uid: int = RUNNER_UID, gid: int = RUNNER_UID) -> None:
    """From root (at start, single-threaded) to `uid` with only the kept capabilities; non-dumpable.

    The runner keeps the workspace group as a supplementary group: it opens the workspace and starts tools
    in it (the chdir happens before the child's uid switch). Tools get no supplementary group at all.
    """
    _check(_libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0), "PR_SET_KEEPCAPS")
    os.setgroups([workspace_gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _capset(KEPT_CAPS, KEPT_CAPS)
    _check(_libc.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0), "PR_SET_KEEPCAPS")
    with contextlib.suppress(IdentityError):  # kernels before 4.3 have no ambient set, hence nothing to clear
        _check(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "PR_CAP_AMBIENT")
    _check(_libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0), "PR_SET_DUMPABLE")


def process_facts(pid: int | str = "self") -> dict[str, Any]:
    """Uids, capability sets and flags of a process, from /proc/<pid>/status (for hello and the tests)."""
    facts: dict[str, Any] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid"):
                facts[key.lower()] = [int(v) for v in value.split()]
            elif key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                facts[key] = int(value.strip(), 16)
            elif key in ("NoNewPrivs", "Seccomp"):
                facts[key] = int(value.strip())
    facts["dumpable"] = bool(_libc.prctl(3, 0, 0, 0, 0)) if pid == "self" else None  # PR_GET_DUMPABLE
    return facts


@dataclass(frozen=True)
class Ident:
    """The uid and gid a session's processes run under; `own` when it is the runner's own (mode none)."""

    uid: int
    gid: int
    own: bool = False

    def popen_kwargs(self) -> dict[str, Any]:
        """subprocess.Popen arguments that start a process as this identity, without any capability and with
        an oom_score_adj of 1000 that it cannot change (_child_setup)."""
        if self.own:
            return {"umask": UMASK}
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "umask": UMASK,
                "preexec_fn": _child_setup}


class Identities:
    """Hands out session identities. In mode "uid" each session gets a pool uid, returned once its
    processes are all gone (the caller's promise)."""

    def __init__(self, mode: str, gid: int, shared_uid: int | None = None) -> None:
        if mode not in MODES:
            raise IdentityError(f"unknown isolation mode {mode!r}; known: {', '.join(MODES)}")
        self.mode = mode
        self.gid = gid if mode != "none" else os.getgid()
        self.shared_uid = shared_uid if shared_uid is not None else POOL_START
        self._lock = threading.Lock()
        # Oldest released first: a uid comes back only after every other free one was used, so a closed
        # session's uid is not the very next session's (its leftovers are scrubbed too: scrub.py).
        self._free: collections.deque[int] = collections.deque(range(POOL_START, POOL_START + POOL_SIZE))

    def acquire(self) -> Ident | None:
        """A new session's identity; None when the pool is exhausted."""
        if self.mode == "none":
            return Ident(os.getuid(), os.getgid(), own=True)
        if self.mode == "shared":
            return Ident(self.shared_uid, self.gid)
        with self._lock:
            if not self._free:
                return None
            return Ident(self._free.popleft(), self.gid)

    def release(self, ident: Ident) -> None:
        if self.mode != "uid":
            return
        with self._lock:
            if ident.uid not in self._free:
                self._free.append(ident.uid)

    def exclusive(self) -> bool:
        """Whether a uid belongs to one session only, so that killing all of its processes is safe."""
        return self.mode == "uid"


@contextlib.contextmanager
def files_as(ident: Ident) -> Iterator[None]:
    """Run file-system work in this thread with the session's fsuid/fsgid: the same permissions its shell
    has, and files it owns. Per thread (the kernel's credentials are), so other calls are unaffected."""
    if ident.own:
        yield
        return
    # setfsuid returns the previous value and reports no error; asking again (-1 changes nothing) returns
    # the value now in force. Restoring the previous values lets these blocks nest.
    prev_gid = _libc.setfsgid(ident.gid) & 0xFFFFFFFF
    prev_uid = _libc.setfsuid(ident.uid) & 0xFFFFFFFF
    try:
        if _libc.setfsuid(-1) & 0xFFFFFFFF != ident.uid or _libc.setfsgid(-1) & 0xFFFFFFFF != ident.gid:
            raise IdentityError(f"cannot act on files as uid {ident.uid}")
        yield
    finally:
        _libc.setfsuid(prev_uid)
        _libc.setfsgid(prev_gid)


# Raw system call numbers: glibc's setresuid changes every thread of the process (and so would the runner's),
# the raw call changes only the calling thread, which is what the killing thread needs.
_SYS_SETRESUID = {"x86_64": 117, "aarch64": 147}.get(platform.machine())
_kill_lock = threading.Lock()


_IPC_RMID = 0


def remove_ipc_of(uid: int, objects: list[tuple[str, int]]) -> int | None:
    """Remove System V IPC objects (("shm" | "msg" | "sem", id)) as `uid`, from this thread, as kill_all_of
    acts: the kernel lets their owner or creator remove them, and the runner holds no CAP_IPC_OWNER. Returns
    how many went, None if this machine cannot act this way."""
    with _acting_as(uid) as acting:
        if not acting:
            return None
        removed = 0
        for kind, ident in objects:
            if kind == "shm":
                rc = _libc.shmctl(ident, _IPC_RMID, None)
            elif kind == "msg":
                rc = _libc.msgctl(ident, _IPC_RMID, None)
            else:
                rc = _libc.semctl(ident, 0, _IPC_RMID)
            removed += rc == 0
        return removed


@contextlib.contextmanager
def _acting_as(uid: int) -> Iterator[bool]:
    """This thread alone as real uid KILLER_UID and effective uid `uid`, CAP_KILL out of its effective set
    (see kill_all_of); yields False, changing nothing, where that cannot be done (no raw setresuid, not the
    runner, or uid 0: an euid switch to 0 would copy CAP_KILL back into the effective set)."""
    if _SYS_SETRESUID is None or os.geteuid() != RUNNER_UID or uid == 0:
        yield False
        return
    with _kill_lock:
        _capset(KEPT_CAPS & ~(1 << CAP_KILL), KEPT_CAPS)
        try:
            if _libc.syscall(_SYS_SETRESUID, KILLER_UID, uid, KILLER_UID) != 0:
                yield False
                return
            try:
                yield True
            finally:
                if _libc.syscall(_SYS_SETRESUID, RUNNER_UID, RUNNER_UID, RUNNER_UID) != 0:
                    os._exit(70)  # a thread stuck with a session's uid: fail closed, the host replaces us
        finally:
            _capset(KEPT_CAPS, KEPT_CAPS)


def kill_all_of(uid: int, sig: int = 9) -> int | None:
    """``kill(-1, sig)`` (SIGKILL by default) as `uid`, from this thread: 1 if it reached a process, 0 if there
    was none, None if this machine cannot do it this way (the caller then forks, for SIGKILL).

    Only this thread changes credentials, to real uid KILLER_UID and effective uid `uid`, with CAP_KILL out of
    its effective set: the kernel then lets it signal exactly the processes whose real or saved uid is `uid`
    (KILLER_UID has no process), while no process of `uid` may signal it back (its real and saved uid are
    not theirs) or trace it (the runner is not dumpable). It restores its credentials before anything else
    runs on it; if that ever failed the runner could not be trusted, so it exits.
    """
    # uid 0 is refused (None): kill(-1) with CAP_KILL back in effect would reach every process; the caller's
    # forked child switches and empties its sets before it signals.
    with _acting_as(uid) as acting:
        if not acting:
            return None
        return 1 if _libc.kill(-1, sig) == 0 else 0
