"""Reading out of a workspace: a file's bytes (a range of them), and a directory as a tar stream.

Both work by fds: a file is opened beneath the root (``O_NOFOLLOW``, non-blocking, regular files only), a
directory is walked by ``server.files.walk``, so a directory swapped for a link during the stream is
skipped, not entered. Symlinks are sent as links, never followed. A file
that grows or shrinks while it is sent still gets exactly the size its header announced (cut, or padded with
zeros), so the tar stream stays well-formed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Iterator

from server.files.safepath import openat2
from server.files.walk import entries

CHUNK = 1024 * 1024
BLOCK = tarfile.BLOCKSIZE


def file_chunks(fd: int, start: int, end: int) -> Iterator[bytes]:
    """Bytes ``start..end`` (exclusive) of ``fd`` (the caller keeps and closes ``fd``)."""
    pos = start
    while pos < end:
        data = os.pread(fd, min(CHUNK, end - pos), pos)
        if not data:
            return
        pos += len(data)
        yield data


def _header(name: str, st: os.stat_result, kind: bytes, size: int = 0, link: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    info.mode, info.mtime = stat.S_IMODE(st.st_mode) & 0o777, int(st.st_mtime)
    info.uid, info.gid = st.st_uid, st.st_gid
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _member(dirfd: int, name: str, arcname: str) -> Iterator[bytes]:
    """One regular file: header, exactly ``size`` bytes, padding."""
    try:
        fd = openat2(dirfd, name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError:
        return  # swapped for a link or removed since it was listed
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        yield _header(arcname, st, tarfile.REGTYPE, st.st_size)
        sent = 0
        while sent < st.st_size:
            data = os.pread(fd, min(CHUNK, st.st_size - sent), sent)
            if not data:
                break
            sent += len(data)
            yield data
        while sent < st.st_size:  # shrank meanwhile: keep the stream well-formed
            pad = min(CHUNK, st.st_size - sent)
            sent += pad
            yield b"\0" * pad
        if st.st_size % BLOCK:
            yield b"\0" * (BLOCK - st.st_size % BLOCK)
    finally:
        os.close(fd)


def tar_stream(dirfd: int) -> Iterator[bytes]:
    """The tree under ``dirfd`` as an uncompressed tar (names relative to it); the caller keeps ``dirfd``."""
    for entry in entries(dirfd):
        if stat.S_ISREG(entry.st.st_mode):
            yield from _member(entry.parent, entry.name, entry.rel)
        elif stat.S_ISDIR(entry.st.st_mode):
            yield _header(entry.rel + "/", entry.st, tarfile.DIRTYPE)
        elif stat.S_ISLNK(entry.st.st_mode):
            with contextlib.suppress(OSError):
                yield _header(entry.rel, entry.st, tarfile.SYMTYPE,
                              link=os.readlink(entry.name, dir_fd=entry.parent))
    yield b"\0" * (2 * BLOCK)


__all__ = ["file_chunks", "tar_stream"]
