"""Kernel files the runner reads on every call (cgroup counters, its own children list), kept open and re-read
with ``pread`` from offset 0.

Why: in a container an ``open()`` of such a file costs the runner about 60 µs of CPU (Python's file object,
then openat, fstat, ioctl, lseek, read, close), and a bash call took five of them. These files are seq_files:
a read from offset 0 regenerates their text, so one held descriptor and ``pread`` give the same fresh value.
A seq_file gives at most one page per read, so the file is read on until a read returns nothing: the runner's
children list passes a page at about 700 children, and read once it silently lost the rest (a leftover of a
call could then escape the sweep while another session flooded the list; found by review). The descriptors
are the runner's (close-on-exec, uid 999, non-dumpable): no tool process can reach them.
"""

from __future__ import annotations

import contextlib
import os
import threading

_lock = threading.Lock()
_fds: dict[str, int] = {}
_SIZE = 65536


def _fd(path: str) -> int:
    with _lock:
        fd = _fds.get(path)
        if fd is None:
            fd = _fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return fd


def _drop(path: str, fd: int) -> None:
    with _lock:
        if _fds.get(path) == fd:
            del _fds[path]
            with contextlib.suppress(OSError):
                os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while data := os.pread(fd, _SIZE, offset):
        chunks.append(data)
        offset += len(data)
    return b"".join(chunks)


def read(path: str) -> bytes | None:
    """The file's current content, whole, or None where it cannot be read. A descriptor that stops working
    (the file went away) is dropped and the file opened once more."""
    for _ in range(2):
        try:
            fd = _fd(path)
        except OSError:
            return None
        try:
            return _read_all(fd)
        except OSError:
            _drop(path, fd)
    return None
