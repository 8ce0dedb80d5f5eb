"""Resolve a tool's path inside the workspace without ever letting the kernel follow a link for us.

The walk goes component by component from a directory fd of the workspace root, opening each directory with
O_NOFOLLOW. A symlink met on the way is read (readlinkat) and its target walked the same way, so `..` and
absolute targets are judged against the workspace, not the real root. The caller gets a directory fd and a
final name that is not a symlink, and must open it with O_NOFOLLOW: a link swapped in afterwards fails
with ELOOP instead of being followed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from dataclasses import dataclass

from toolrunner.runner.context import ToolFailure

MAX_LINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def outside(path: str, why: str) -> ToolFailure:
    return ToolFailure("PATH_OUTSIDE_WORKSPACE", f"{path!r} {why}; tools may only touch files in the workspace")


@dataclass
class Target:
    """A resolved path: `name` inside the directory open as `dir_fd` (which the caller must close)."""

    dir_fd: int
    name: str
    rel: str
    exists: bool

    def close(self) -> None:
        os.close(self.dir_fd)

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Workspace:
    """The workspace root, held open so that resolution never depends on a path string outside it."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.root_fd = os.open(self.root, _DIR_FLAGS)

    def parts(self, path: str) -> list[str]:
        """Split a tool path into components relative to the root; absolute paths must lie inside it."""
        if not isinstance(path, str):
            raise ToolFailure("INVALID_INPUT", "the path must be a string")
        if "\0" in path:
            raise ToolFailure("INVALID_INPUT", "the path contains a NUL byte")
        if path.startswith("/"):
            if path.rstrip("/") == self.root:
                path = ""
            elif path.startswith(self.root + "/"):
                path = path[len(self.root) + 1 :]
            else:
                raise outside(path, "is not under the workspace")
        return [p for p in path.split("/") if p not in ("", ".")]

    def resolve(self, path: str, *, create_dirs: bool = False, follow_final: bool = True) -> Target:
        """Walk `path`; intermediate components must be directories inside the workspace."""
        queue = deque(self.parts(path))
        stack = [os.dup(self.root_fd)]
        names: list[str] = []
        links = 0
        try:
            while queue:
                comp = queue.popleft()
                last = not queue
                if comp == "..":
                    if len(stack) == 1:
                        raise outside(path, "leads out of the workspace through '..'")
                    os.close(stack.pop())
                    names.pop()
                    continue
                if comp == ".":
                    continue
                try:
                    st = os.stat(comp, dir_fd=stack[-1], follow_symlinks=False)
                except FileNotFoundError:
                    st = None
                except NotADirectoryError:
                    raise ToolFailure("FILE_NOT_FOUND", f"{path!r}: a parent is not a directory") from None
                except OSError as exc:  # too long, permission denied, I/O error
                    raise _os_failure(path, exc) from None
                if st is not None and stat.S_ISLNK(st.st_mode) and (follow_final or not last):
                    links += 1
                    if links > MAX_LINKS:
                        raise ToolFailure("INVALID_INPUT", f"{path!r}: too many levels of symbolic links")
                    try:
                        target = os.readlink(comp, dir_fd=stack[-1])
                    except OSError as exc:  # EINVAL: swapped for a non-link since the stat; ENOENT: gone
                        if exc.errno == errno.ENOENT:
                            raise ToolFailure("FILE_NOT_FOUND", f"{path!r}: {comp!r} vanished") from None
                        raise outside(path, "changed while being resolved") from None
                    if target.startswith("/"):
                        if target.rstrip("/") != self.root and not target.startswith(self.root + "/"):
                            raise outside(path, f"is a symlink to {target!r}, outside the workspace")
                        for fd in stack[1:]:
                            os.close(fd)
                        del stack[1:]
                        names.clear()
                        target = target[len(self.root) :]
                    queue.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
                    continue
                if last:
                    return Target(stack.pop(), comp, "/".join([*names, comp]), st is not None)
                if st is None:
                    if not create_dirs:
                        raise ToolFailure("FILE_NOT_FOUND", f"{path!r}: directory {comp!r} does not exist")
                    try:
                        os.mkdir(comp, 0o777, dir_fd=stack[-1])
                    except FileExistsError:
                        pass
                    except OSError as exc:
                        raise _os_failure(path, exc) from None
                try:
                    stack.append(os.open(comp, _DIR_FLAGS, dir_fd=stack[-1]))
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        raise outside(path, "changed into a symlink while being resolved") from None
                    if exc.errno == errno.ENOTDIR:
                        raise ToolFailure("FILE_NOT_FOUND", f"{path!r}: {comp!r} is not a directory") from None
                    raise _os_failure(path, exc) from None
                names.append(comp)
            # The path named the workspace root or a directory reached through '..'.
            return Target(stack.pop(), ".", "/".join(names) or ".", True)
        finally:
            for fd in stack:
                os.close(fd)


def _os_failure(path: str, exc: OSError) -> ToolFailure:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ToolFailure("RESOURCE_LIMIT", f"{path!r}: {exc.strerror} (disk limit)")
    if exc.errno == errno.EACCES:
        return ToolFailure("INVALID_INPUT", f"{path!r}: permission denied")
    return ToolFailure("INVALID_INPUT", f"{path!r}: {exc.strerror}")
