"""Setuid files a uid-0 tool makes in the owner's workspace must not become root for someone on the host.

When the owner's workspace belongs to root, its tools run as uid 0 (without any capability, docs/
workspace-quota.md §2). Such a process may ``chmod u+s`` a file it owns, i.e. leave a setuid-root program in a
host directory. Inside the sandbox that gains nothing (no-new-privileges); on the host it would. So, while the
sandbox may write there, the directory is bind-mounted over itself ``nosuid,nodev`` (set-id bits and devices
are ignored through that path), and the set-id bits of files owned by root (set-uid) or group root
(set-gid) are stripped when the guard is put in place and when it is lifted, so none outlives the mount
(a reboot drops the mount: the next start strips before the sandbox runs again).

A bind mount covers path lookups made after it: a process that already had its cwd (or a directory fd)
inside the workspace still reaches the files through the old mount, set-id bits honoured. That residual risk
(docs/workspace-quota.md §2) is made visible: ``guard`` logs every such process it finds in ``/proc``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from toolrunner.mounts import mounted_at

log = logging.getLogger(__name__)
_SETID = stat.S_ISUID | stat.S_ISGID


def _run(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()[:300]}")


def guarded(path: Path) -> bool:
    """Whether the mount visible at ``path`` ignores set-id bits (ours, or any nosuid mount put there)."""
    mount = mounted_at(path)
    return mount is not None and "nosuid" in mount.options.split(",")


def guard(path: Path) -> bool:
    """Make ``path`` a nosuid,nodev bind of itself (reusing one already there); strips set-id bits first.
    Returns whether the guard holds; a failure is logged (the server is not root, say), never raised."""
    if guarded(path):
        return True
    try:
        strip_setid(path)
        _run("mount", "--bind", str(path), str(path))
        _run("mount", "-o", "remount,bind,nosuid,nodev", str(path))
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("could not mount the owner's workspace %s nosuid (%s): a setuid file a tool makes there "
                  "would be honoured on the host", path, exc)
        return guarded(path)
    for pid, uid in holders_inside(path):
        log.warning("process %d (uid %d) had its cwd or a directory open inside %s before the nosuid guard: "
                    "through that handle set-id bits are still honoured (docs/workspace-quota.md §2)", pid, uid, path)
    return True


def holders_inside(path: Path) -> list[tuple[int, int]]:
    """(pid, uid) of the processes, other than this one, whose cwd or an open fd is at or under ``path``."""
    found: list[tuple[int, int]] = []
    prefix = str(path).rstrip("/") + "/"
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        links = [f"/proc/{entry}/cwd"]
        with contextlib.suppress(OSError):
            links += [f"/proc/{entry}/fd/{fd}" for fd in os.listdir(f"/proc/{entry}/fd")]
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if target == str(path) or target.startswith(prefix):
                with contextlib.suppress(OSError):
                    found.append((int(entry), os.stat(f"/proc/{entry}").st_uid))
                break
    return found


def unguard(path: Path) -> bool:
    """Lift our guard (if ``path`` is a nosuid bind of itself) and strip set-id bits; True if one was lifted.

    The bits are stripped whatever the unmount does: a busy mount (a host process with its cwd inside) stays
    in place, but a set-id file under it must not wait for a later start to lose its bits. A failed unmount
    is then raised, naming the guard."""
    mount = mounted_at(path)
    if mount is None or "nosuid" not in mount.options.split(",") or mount.source.startswith("/dev/loop"):
        return False  # not ours: nothing there, not nosuid, or a quota filesystem
    try:
        _run("umount", str(path))
    except (OSError, subprocess.SubprocessError) as exc:
        strip_setid(path)
        raise OSError(f"could not lift the nosuid guard of {path}: {exc}") from exc
    strip_setid(path)
    return True


def strip_setid(path: Path) -> int:
    """Clear set-uid bits of root's files and set-gid bits of group root's under ``path`` (one filesystem,
    symlinks not followed); returns how many files were changed.

    The walk goes from directory fd to directory fd (``openat`` with ``O_NOFOLLOW``), never by path: a
    directory the sandbox swaps for a link to ``/usr/bin`` while the walk runs is refused, not entered, so
    nothing outside the workspace can lose (or be handed) its bits. It holds at most ``MAX_OPEN_DIRS`` fds
    whatever the depth: a chain of directories deeper than the server's fd limit would otherwise fail the
    strip (and with it the guard). Deeper, the oldest level's fd is closed and the walk comes back to it
    through ``..``, checked to be the same directory; a tree moved meanwhile stops the walk (``OSError``)."""
    changed = 0
    try:
        root = os.open(path, _DIR_FLAGS)
    except OSError:
        return 0
    device = os.fstat(root).st_dev
    # Depth first. stack[0] (the root) and stack[oldest:] hold open fds; the levels between were closed.
    stack = [_Level(root, os.fstat(root).st_ino)]
    oldest = 1
    try:
        stack[0].subdirs, changed = _strip_files(root)
        while stack:
            top = stack[-1]
            fd = None
            while top.subdirs and fd is None:
                fd = _open_dir(top.subdirs.pop(), top.fd, device)
            if fd is not None:
                level = _Level(fd, os.fstat(fd).st_ino)
                stack.append(level)
                level.subdirs, stripped = _strip_files(fd)
                changed += stripped
                if len(stack) - oldest > MAX_OPEN_DIRS:
                    os.close(stack[oldest].fd)
                    stack[oldest].fd = -1
                    oldest += 1
                continue
            stack.pop()
            try:
                if stack and stack[-1].fd < 0:
                    stack[-1].fd = _parent(top.fd, stack[-1].ino, device)
                    oldest = len(stack) - 1
            finally:
                os.close(top.fd)
    finally:
        for left in stack:
            if left.fd >= 0:
                os.close(left.fd)
    if changed:
        log.warning("stripped set-id bits from %d root-owned file(s) in %s", changed, path)
    return changed


MAX_OPEN_DIRS = 64


@dataclass
class _Level:
    """A directory of the walk: its fd (-1 while closed for depth), its inode, its subdirectories to visit."""

    fd: int
    ino: int
    subdirs: list[str] = field(default_factory=list)


def _parent(fd: int, ino: int, device: int) -> int:
    """``..`` of directory ``fd``, if it is still the directory (``ino``) the walk came down from."""
    parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
    st = os.fstat(parent)
    if (st.st_dev, st.st_ino) != (device, ino):
        os.close(parent)
        raise OSError("the directory tree changed while its set-id bits were stripped")
    return parent


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _strip_files(fd: int) -> tuple[list[str], int]:
    """Strip the files directly in directory ``fd``; its subdirectories' names (links excluded) and the count."""
    with os.scandir(fd) as entries:
        listed = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    subdirs = [name for name, is_dir in listed if is_dir]
    return subdirs, sum(_strip_one(name, fd) for name, is_dir in listed if not is_dir)


def _open_dir(name: str, parent: int, device: int) -> int | None:
    """The subdirectory ``name`` of ``parent`` if it is a real directory on ``device`` (never a link)."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError:
        return None
    if os.fstat(fd).st_dev != device:
        os.close(fd)
        return None
    return fd


def _strip_one(name: str, parent: int) -> int:
    """Through an fd opened without following links: a name swapped for a link to a system binary meanwhile
    changes nothing outside the workspace."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                     dir_fd=parent)
    except OSError:
        return 0
    try:
        st = os.fstat(fd)
        drop = (stat.S_ISUID if st.st_uid == 0 else 0) | (stat.S_ISGID if st.st_gid == 0 else 0)
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & drop:
            return 0
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~drop)
        return 1
    except OSError:
        return 0
    finally:
        os.close(fd)
