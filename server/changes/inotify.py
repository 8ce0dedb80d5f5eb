"""A thin ``inotify(7)`` over ctypes: one non-blocking instance, watches added through a held directory fd.

A watch is added on ``/proc/self/fd/N`` of a directory fd we opened beneath the workspace root with
``openat2`` — never on a path string inside the workspace, which the tenant could swap for a link to a host
directory between our check and the ``inotify_add_watch``. Events are queued by the kernel at the moment of
the write, so reading the fd after a call's result arrived sees every change the call made.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import termios
from typing import NamedTuple

IN_MODIFY = 0x2
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_EXCL_UNLINK = 0x4000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
WATCH_MASK = (IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
              | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)
_HEADER = struct.Struct("iIII")
_READ_SIZE = 256 * 1024

_libc = ctypes.CDLL(None, use_errno=True)


def _max_queued_events() -> int:
    """The kernel's bound on one instance's queue (past it: one ``IN_Q_OVERFLOW`` and the rest dropped)."""
    try:
        with open("/proc/sys/fs/inotify/max_queued_events") as f:
            return max(1, int(f.read()))
    except (OSError, ValueError):
        return 16384


class Event(NamedTuple):
    wd: int
    mask: int
    name: str


class Inotify:
    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd = int(fd)
        self.max_events = _max_queued_events() + 1  # a full queue, and its overflow event

    def add(self, dirfd: int) -> int:
        """Watch the directory held by ``dirfd``; returns the watch descriptor (the same for the same inode)."""
        wd = _libc.inotify_add_watch(self.fd, f"/proc/self/fd/{dirfd}".encode(), WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return int(wd)

    def remove(self, wd: int) -> None:
        _libc.inotify_rm_watch(self.fd, wd)  # the watch may be gone already (IN_IGNORED): nothing to do

    def read(self) -> list[Event]:
        """Every event queued now (none: an empty list); never blocks. At most a full kernel queue's worth:
        that is all that can have been queued when the read began, and a tenant renaming in a tight loop
        queues events faster than they are parsed, so reading "until empty" never ended (and grew without
        bound); what came after the read began is the next read's."""
        out: list[Event] = []
        while len(out) < self.max_events:
            try:
                buf = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return out
            pos = 0
            while pos + _HEADER.size <= len(buf):
                wd, mask, _cookie, size = _HEADER.unpack_from(buf, pos)
                pos += _HEADER.size
                name = buf[pos:pos + size].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                pos += size
                out.append(Event(wd, mask, name))
            if len(buf) < _READ_SIZE // 2:
                return out
        return out

    def pending_bytes(self) -> int:
        """How many bytes of events are queued (``FIONREAD``): a cheap look before deciding where to read."""
        buf = bytearray(4)
        fcntl.ioctl(self.fd, termios.FIONREAD, buf)
        return int.from_bytes(buf, "little", signed=True)

    def close(self) -> None:
        os.close(self.fd)


__all__ = ["Event", "Inotify"]
