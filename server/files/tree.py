"""Listing one directory (paged, with SHA-256 of regular files) and deleting an entry, by fds.

Entries are ``lstat``'ed relative to the directory's fd (a link is described, not followed) and a file is
hashed through a fresh ``openat2`` beneath it, so a name swapped for a link between the listing and the hash
is reported without a hash instead of being read through the link.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime

from server.changes.state import HASH_MAX_BYTES, state_at
from server.files.errors import FilesError
from server.files.safepath import Root, describe


@dataclass(frozen=True)
class Item:
    name: str
    type: str  # file | directory | symlink | other
    size: int
    mode: str  # octal permission bits, e.g. "0664"
    mtime: str
    sha256: str | None
    link_target: str | None


def sha256_at(dirfd: int, name: str, limit: int = HASH_MAX_BYTES) -> str | None:
    """SHA-256 of the regular file ``name`` under ``dirfd``, None when it is not one (any more) or too big."""
    state = state_at(dirfd, name, limit)
    return None if state is None else state.sha256


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    return "symlink" if stat.S_ISLNK(mode) else "other"


def list_dir(root: Root, parts: list[str], page: int, per_page: int, with_hash: bool) -> tuple[int, list[Item]]:
    """(total entries, the page's items sorted by name) of the directory ``parts``."""
    dirfd = root.open_dir(parts)
    try:
        names = sorted(os.listdir(dirfd))
        items = []
        for name in names[(page - 1) * per_page: page * per_page]:
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except OSError:
                continue  # removed since the listing
            kind = _kind(st.st_mode)
            target = None
            if kind == "symlink":
                with contextlib.suppress(OSError):
                    target = os.readlink(name, dir_fd=dirfd)
            digest = sha256_at(dirfd, name) if with_hash and kind == "file" else None
            items.append(Item(name, kind, st.st_size, f"{stat.S_IMODE(st.st_mode):04o}",
                              datetime.fromtimestamp(st.st_mtime, UTC).isoformat().replace("+00:00", "Z"),
                              digest, target))
        return len(names), items
    finally:
        os.close(dirfd)


def delete(root: Root, parts: list[str]) -> str:
    """Remove the entry ``parts`` (a directory with all it holds; a link itself, never its target); its type."""
    path = "/".join(parts)
    if not parts:
        raise FilesError("FILE_PATH_CONFLICT", "the workspace itself cannot be deleted (delete its entries)")
    with root.parent(parts) as dirfd:
        try:
            st = os.stat(parts[-1], dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(parts[-1], dir_fd=dirfd)  # fd-based: never follows a link it meets
            else:
                os.unlink(parts[-1], dir_fd=dirfd)
        except OSError as exc:
            raise describe(exc, path) from None
        return _kind(st.st_mode)


__all__ = ["Item", "delete", "list_dir", "sha256_at"]
