"""Writing one file into a workspace: streamed into a fresh name beside the target, then ``renameat`` over it.

The target name is replaced, never written through, so a symlink or hard link the tenant put there is
unlinked, not followed. Bytes are counted and hashed as they arrive; past the cap the write stops and the
partial file is removed (413 ``FILE_TOO_LARGE``), whatever the client claimed in ``Content-Length``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO

from server.files.errors import FilesError
from server.files.identity import Identity
from server.files.safepath import Root, describe, give

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Written:
    bytes: int
    sha256: str
    replaced: bool  # something was at that name before


class _Sink:
    """A temporary file beside the target, counted and hashed; ``commit`` renames it over the target."""

    def __init__(self, dirfd: int, name: str, cap: int, path: str) -> None:
        self.dirfd, self.name, self.cap, self.path = dirfd, name, cap, path
        self.tmp = f".openanalyst-upload-{secrets.token_hex(8)}"
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=dirfd)
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.cap:
            raise FilesError("FILE_TOO_LARGE", f"{self.path}: larger than the policy's limit of {self.cap} bytes")
        self.hash.update(data)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            raise describe(exc, self.path) from None

    def commit(self, ident: Identity, mode: int | None) -> Written:
        give(self.fd, ident.owner, ident.file_mode(mode))
        os.close(self.fd)
        self.fd = -1
        try:
            os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False)
            replaced = True
        except FileNotFoundError:
            replaced = False
        try:
            os.rename(self.tmp, self.name, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd)
        except OSError as exc:
            raise describe(exc, self.path) from None
        return Written(self.size, self.hash.hexdigest(), replaced)

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self.tmp, dir_fd=self.dirfd)


@contextlib.contextmanager
def sink(root: Root, parts: list[str], ident: Identity, cap: int) -> Iterator[_Sink]:
    """A sink for the file ``parts`` (parents made as needed); removed unless committed."""
    if not parts:
        raise FilesError("FILE_PATH_CONFLICT", "the workspace itself is a directory: a file needs a name")
    path = "/".join(parts)
    with root.parent(parts, create=True, mode=ident.dir_mode(), owner=ident.owner) as dirfd:
        try:
            out = _Sink(dirfd, parts[-1], cap, path)
        except OSError as exc:
            raise describe(exc, path) from None
        try:
            yield out
        finally:
            out.discard()


async def write_stream(root: Root, parts: list[str], chunks: AsyncIterator[bytes], ident: Identity,
                       cap: int) -> Written:
    """The request body as the file ``parts``."""
    with sink(root, parts, ident, cap) as out:
        async for chunk in chunks:
            out.write(chunk)
        return out.commit(ident, None)


def write_from(root: Root, parts: list[str], source: IO[bytes], size: int, ident: Identity, mode: int,
               cap: int) -> Written:
    """``size`` bytes of ``source`` (an archive member) as the file ``parts``."""
    with sink(root, parts, ident, cap) as out:
        left = size
        while left > 0:
            data = source.read(min(CHUNK, left))
            if not data:
                break
            out.write(data)
            left -= len(data)
        return out.commit(ident, mode)


__all__ = ["Written", "write_from", "write_stream"]
