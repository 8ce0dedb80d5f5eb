"""Tool processes cannot write anything under /proc: a Landlock domain each enters between fork and exec.

Why: every tool process starts with ``oom_score_adj`` 1000 so that the OOM killer takes a session's processes
before the runner. Without CAP_SYS_RESOURCE a process may lower its own value down to ``oom_score_adj_min``,
which only a writer holding that capability sets (fs/proc/base.c ``__set_oom_adj``). The container does not
get it, and some hosts cannot grant it at all (on the development machine no bounding set below PID 1 holds
it, so runc refuses a container that asks); the minimum a container inherits is typically -999 or -1000, so
tool code could make itself the OOM killer's last choice and leave the runner as its first. The value changes
only through ``/proc/<pid>/oom_score_adj`` and ``oom_adj``, so the runner takes that way away instead: a
ruleset that handles file writes and grants them beneath every top-level directory except /proc. Landlock
needs no privilege (only no-new-privileges, which the container has), is inherited across fork and exec and
cannot be undone. Pipes and sockets reopened through ``/proc/self/fd`` stay writable (Landlock checks the
file they resolve to), and so does every file outside /proc. See docs/runner-trust.md §4.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the same number on every architecture
_ACCESS_FS_WRITE_FILE = 1 << 1
_RULE_PATH_BENEATH = 1
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
EXEMPT = "proc"


class GuardError(Exception):
    """The kernel cannot build the ruleset (no Landlock, or a seccomp profile that refuses it)."""


def build(root: str = "/") -> int:
    """A ruleset fd (close-on-exec) to pass to ``restrict_self``: writes allowed beneath every entry of
    `root` except /proc. Built once, at start; the runner itself never enters it."""
    attr = ctypes.create_string_buffer(struct.pack("=Q", _ACCESS_FS_WRITE_FILE))
    fd = int(_libc.syscall(_CREATE_RULESET, attr, ctypes.c_size_t(len(attr.raw)), ctypes.c_uint32(0)))
    if fd < 0:
        raise GuardError(f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if name == EXEMPT or os.path.islink(path):
                continue  # a top-level symlink (/bin, /lib) points at a directory granted on its own
            _allow_writes_beneath(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _allow_writes_beneath(ruleset: int, path: str) -> None:
    try:
        target = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # gone, or not ours to name: nothing beneath it is granted, which only denies more
    try:
        rule = ctypes.create_string_buffer(struct.pack("=Qi", _ACCESS_FS_WRITE_FILE, target))
        if _libc.syscall(_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), rule,
                         ctypes.c_uint32(0)) != 0:
            raise GuardError(f"landlock_add_rule {path}: {os.strerror(ctypes.get_errno())}")
    finally:
        with contextlib.suppress(OSError):
            os.close(target)


def restrict_self(ruleset: int) -> int:
    """Enter the ruleset's domain (in a child, before exec): 0, or -1 with errno set. Only a system call."""
    return int(_libc.syscall(_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)))
