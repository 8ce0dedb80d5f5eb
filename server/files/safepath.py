"""Paths inside a workspace the tenant's code controls, resolved so that the host never leaves it.

Every lookup starts from a held fd of the workspace root and goes through ``openat2`` with
``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS``: the kernel refuses any symlink on the way
(``ELOOP``) and any escape (``EXDEV``) *during* the walk, so a directory swapped for a link between two of
our steps changes nothing. The final name is then used relative to its parent's fd (``O_NOFOLLOW``,
``renameat``, ``unlinkat``), never as a path string after a check.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterator

from server.files.errors import FilesError

SYS_OPENAT2 = 437  # x86_64 and aarch64 share the number (Linux ≥ 5.6)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
SAFE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
_RETRIES = 64  # EAGAIN: a rename raced the lookup (RESOLVE_BENEATH re-checks); try again, bounded

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = SAFE) -> int:
    """``openat2(2)``: an fd for ``path`` under ``dirfd`` resolved with ``resolve``; raises ``OSError``."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    raw = os.fsencode(path)
    for _ in range(_RETRIES):
        fd = _libc.syscall(SYS_OPENAT2, ctypes.c_int(dirfd), ctypes.c_char_p(raw), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err not in (errno.EINTR, errno.EAGAIN):
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, "the path kept changing during lookup", path)


def parts_of(path: str) -> list[str]:
    """The components of a workspace-relative path; ``INVALID_PATH`` for anything that could mean elsewhere."""
    if "\x00" in path or len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise FilesError("INVALID_PATH", "the path has a NUL byte or is longer than 4096 bytes")
    parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
    for part in parts:
        if part == "..":
            raise FilesError("INVALID_PATH", "a path may not contain '..'")
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise FilesError("INVALID_PATH", "a path component is longer than 255 bytes")
    return parts


def describe(exc: OSError, path: str) -> FilesError:
    """The files error an ``OSError`` of a lookup or an operation on ``path`` means."""
    code = {errno.ELOOP: "FILE_PATH_HAS_SYMLINK", errno.EXDEV: "FILE_PATH_HAS_SYMLINK",
            errno.ENOENT: "FILE_NOT_FOUND", errno.ENOTDIR: "FILE_PATH_CONFLICT", errno.EISDIR: "NOT_A_FILE",
            errno.EEXIST: "FILE_PATH_CONFLICT", errno.ENOTEMPTY: "FILE_PATH_CONFLICT",
            errno.ENOSPC: "WORKSPACE_FULL", errno.EDQUOT: "WORKSPACE_FULL", errno.EFBIG: "FILE_TOO_LARGE",
            errno.ENAMETOOLONG: "INVALID_PATH", errno.EACCES: "FILE_PATH_CONFLICT",
            errno.EPERM: "FILE_PATH_CONFLICT"}.get(exc.errno or 0, "FILE_PATH_CONFLICT")
    why = {"FILE_PATH_HAS_SYMLINK": "a symbolic link is on the way (links are never followed by the host)",
           "FILE_NOT_FOUND": "no such file or directory", "WORKSPACE_FULL": "the workspace quota is full",
           "FILE_PATH_CONFLICT": f"it conflicts with what is there ({os.strerror(exc.errno or 0)})"}
    return FilesError(code, f"{path or '.'}: {why.get(code, os.strerror(exc.errno or 0))}")


class Root:
    """A held ``O_PATH`` fd of one workspace root; every method resolves beneath it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, workspace: str) -> Root:
        # The workspace directory itself is the host's (under the data dir, or the owner's configured one).
        return cls(os.open(workspace, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_dir(self, parts: list[str], *, create: bool = False, mode: int = 0o775,
                 owner: tuple[int, int] | None = None) -> int:
        """A read fd of the directory ``parts`` (the root for ``[]``); with ``create``, missing levels are made
        (``mkdirat`` relative to the fd of the level above, then opened beneath it again, then given their
        owner and mode through that fd)."""
        path = "/".join(parts)
        if not create:
            try:
                return openat2(self.fd, path or ".", os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                raise describe(exc, path) from None
        fd = openat2(self.fd, ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i, part in enumerate(parts):
                made = False
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                    made = True
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise describe(exc, "/".join(parts[:i + 1])) from None
                try:
                    nxt = openat2(fd, part, os.O_RDONLY | os.O_DIRECTORY)
                except OSError as exc:
                    raise describe(exc, "/".join(parts[:i + 1])) from None
                os.close(fd)
                fd = nxt
                if made:
                    give(fd, owner, mode)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def open_file(self, parts: list[str]) -> tuple[int, os.stat_result]:
        """A read fd of the regular file ``parts`` and its stat; ``NOT_A_FILE`` for anything else (a FIFO is
        opened non-blocking, so it cannot hang the host)."""
        path = "/".join(parts)
        try:
            fd = openat2(self.fd, path or ".", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW)
        except OSError as exc:
            raise describe(exc, path) from None
        st = os.fstat(fd)
        if not _is_reg(st.st_mode):
            os.close(fd)
            raise FilesError("NOT_A_FILE", f"{path or '.'}: not a regular file")
        return fd, st

    def lstat(self, parts: list[str]) -> os.stat_result:
        """The entry itself (a link is stat'ed, not followed), its parent resolved beneath the root."""
        if not parts:
            return os.fstat(self.fd)
        with self.parent(parts) as dirfd:
            try:
                return os.stat(parts[-1], dir_fd=dirfd, follow_symlinks=False)
            except OSError as exc:
                raise describe(exc, "/".join(parts)) from None

    @contextlib.contextmanager
    def parent(self, parts: list[str], *, create: bool = False, mode: int = 0o775,
               owner: tuple[int, int] | None = None) -> Iterator[int]:
        """The fd of the directory holding ``parts[-1]`` (made on demand), closed after use."""
        fd = self.open_dir(parts[:-1], create=create, mode=mode, owner=owner)
        try:
            yield fd
        finally:
            os.close(fd)


def _is_reg(mode: int) -> bool:
    return stat.S_ISREG(mode)


def give(fd: int, owner: tuple[int, int] | None, mode: int) -> None:
    """Give an entry we created (held by ``fd``) its owner and exact mode, whatever the umask."""
    if owner is not None:
        with contextlib.suppress(PermissionError):  # a server that is not root keeps its own uid
            os.fchown(fd, owner[0], owner[1])
    os.fchmod(fd, mode)  # after chown, which clears set-id bits


__all__ = ["Root", "describe", "give", "openat2", "parts_of"]
