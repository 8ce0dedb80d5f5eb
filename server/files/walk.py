"""The one fd walk of a workspace tree: every entry under a directory, depth first, nothing followed.

Each directory is entered through ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` relative to its
parent's fd, so a directory swapped for a link while we walk is skipped, never entered; one fd per level is
open at a time (at most ``MAX_DEPTH``), whatever the width of the tree. Used by the tar download and by the
change reports' index.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from typing import NamedTuple

from server.files.safepath import openat2

MAX_DEPTH = 256


class Entry(NamedTuple):
    parent: int  # fd of the directory holding it (valid until the walk moves on)
    name: str
    rel: str  # relative to the walk's root
    st: os.stat_result  # lstat: a link is described, not followed


def entries(rootfd: int, start: str = "", on_dir: Callable[[int, str], bool] | None = None) -> Iterator[Entry]:
    """Every entry under ``start`` (a directory before its contents). ``on_dir(fd, rel)`` is told of each
    directory, ``start`` included, and returns False to leave it out (a cap reached)."""
    try:
        top = openat2(rootfd, start or ".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    if on_dir is not None and not on_dir(top, start):
        os.close(top)
        return
    stack: list[tuple[int, str, Iterator[str]]] = [(top, start, iter(_names(top)))]
    try:
        while stack:
            fd, rel, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(fd)
                stack.pop()
                continue
            child = f"{rel}/{name}" if rel else name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # gone since the listing
            if not stat.S_ISDIR(st.st_mode):
                yield Entry(fd, name, child, st)
                continue
            if len(stack) >= MAX_DEPTH:
                continue
            try:
                sub = openat2(fd, name, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue  # swapped for a link, or gone
            if on_dir is not None and not on_dir(sub, child):
                os.close(sub)
                continue
            yield Entry(fd, name, child, st)
            stack.append((sub, child, iter(_names(sub))))
    finally:
        for fd, _, _ in stack:
            with contextlib.suppress(OSError):
                os.close(fd)


def _names(fd: int) -> list[str]:
    try:
        return sorted(os.listdir(fd))
    except OSError:
        return []


__all__ = ["Entry", "entries"]
