"""What a workspace file is at a moment: size, mtime and SHA-256, read beneath the workspace root (no link is
ever followed, the tenant's code may swap any name for one), and the walk that builds the first index."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from typing import NamedTuple

from server.files.safepath import openat2
from server.files.walk import entries

HASH_MAX_BYTES = 256 * 1024 * 1024  # files larger than this get no SHA-256 in a report (size and mtime only)
CHUNK = 1024 * 1024


class FileState(NamedTuple):
    size: int
    mtime_ns: int
    sha256: str | None
    ctime_ns: int = 0  # no process can set it back (mtime it can): what tells a change when a hash is missing


def _hash_fd(fd: int, size: int) -> str:
    """SHA-256 of the first ``size`` bytes (the size ``fstat`` gave): a file the tenant keeps extending, or
    makes a terabyte hole after the ``fstat``, must not keep the host reading."""
    digest = hashlib.sha256()
    while size > 0 and (data := os.read(fd, min(CHUNK, size))):
        digest.update(data)
        size -= len(data)
    return digest.hexdigest()


def state_at(rootfd: int, rel: str, hash_max: int = HASH_MAX_BYTES) -> FileState | None:
    """The regular file ``rel`` now, None when there is none (or a link, a directory, a FIFO there)."""
    try:
        fd = openat2(rootfd, rel, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        digest = _hash_fd(fd, st.st_size) if st.st_size <= hash_max else None
        return FileState(st.st_size, st.st_mtime_ns, digest, st.st_ctime_ns)
    except OSError:
        return None
    finally:
        os.close(fd)


def walk(rootfd: int, start: str, on_dir: Callable[[int, str], bool]) -> Iterator[str]:
    """The regular files under ``start`` (relative names); ``on_dir`` as in ``server.files.walk.entries``."""
    return (e.rel for e in entries(rootfd, start, on_dir) if stat.S_ISREG(e.st.st_mode))


__all__ = ["FileState", "state_at", "walk"]
