"""What a closed session left in the container's shared scratch places, removed before its uid is used again.

Why: a session's uid returns to the pool when the session closes, and a later session may be handed it. Files
the closed session wrote readable by its uid alone (``umask 077``, ``mktemp``) in ``/tmp``, ``/dev/shm`` or
another writable tmpfs would then be readable by that later session, which is another session's data. The
session's private directory is removed by ``Session.close``; this removes the rest: every entry owned by the uid
in those places, walked with the uid's own file-system credentials (``files_as``: the sticky bit lets an owner
unlink its own entries, and its private directories are open to it). A walk that cannot finish (more entries
than MAX_ENTRIES, longer than MAX_S, or an entry of the uid it cannot remove) says so, and the caller keeps the
uid out of the pool: better one uid fewer than a leak.

System V IPC objects (shared memory, message queues, semaphores) outlive their processes too, and their modes
check the uid: those the uid owns or made are removed as well (``identity.remove_ipc_of``).

``/workspace`` is not walked: its files are the tenant's work, shared on purpose (README: what sessions share).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time

from toolrunner.runner.identity import Ident, IdentityError, files_as, remove_ipc_of

PLACES = ("/tmp", "/dev/shm")
MAX_ENTRIES = 50_000
MAX_S = 5.0


def scratch_places(mounts: str = "/proc/self/mounts") -> list[str]:
    """/tmp, /dev/shm and every other writable tmpfs except the workspace's and the runner's own."""
    places = list(PLACES)
    with contextlib.suppress(OSError), open(mounts) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 4 or parts[2] != "tmpfs" or "rw" not in parts[3].split(","):
                continue
            target = parts[1]
            if target not in places and not target.startswith(("/workspace", "/proc", "/sys", "/run/openanalyst")):
                places.append(target)
    return places


def scrub(ident: Ident, places: list[str] | None = None) -> bool:
    """Remove every entry `ident`'s uid owns under `places`; True when none is left (or none was found)."""
    if ident.own:
        return True
    deadline = time.monotonic() + MAX_S
    budget = [MAX_ENTRIES]
    try:
        with files_as(ident):
            clean = all(_scrub_place(place, ident.uid, deadline, budget) for place in places or scratch_places())
    except IdentityError:
        return False
    return clean and _scrub_ipc(ident.uid)


def _scrub_ipc(uid: int) -> bool:
    """Remove the System V shared memory, message queues and semaphores the uid owns or made: they outlive
    every process (a ``shmget`` segment of mode 0600 would pass to the uid's next session)."""
    objects = sysv_objects_of(uid)
    if objects:
        remove_ipc_of(uid, objects)
        objects = sysv_objects_of(uid)
    return not objects


def sysv_objects_of(uid: int, root: str = "/proc/sysvipc") -> list[tuple[str, int]]:
    """(kind, id) of every System V IPC object whose owner or creator is `uid` (read from /proc/sysvipc)."""
    found: list[tuple[str, int]] = []
    for kind, id_column in (("shm", "shmid"), ("msg", "msqid"), ("sem", "semid")):
        try:
            with open(f"{root}/{kind}") as f:
                header, *rows = f.read().splitlines()
        except (OSError, ValueError):
            continue
        names = header.split()
        try:
            at_id, at_uid, at_cuid = names.index(id_column), names.index("uid"), names.index("cuid")
        except ValueError:
            continue
        for row in rows:
            cells = row.split()
            if len(cells) > max(at_id, at_uid, at_cuid) and str(uid) in (cells[at_uid], cells[at_cuid]):
                found.append((kind, int(cells[at_id])))
    return found


_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _scrub_place(place: str, uid: int, deadline: float, budget: list[int]) -> bool:
    try:
        fd = os.open(place, _DIR_FLAGS | os.O_NOFOLLOW)
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return True
    except OSError:
        return False
    try:
        return _scrub_dir(fd, uid, deadline, budget)
    finally:
        os.close(fd)


def _scrub_dir(dir_fd: int, uid: int, deadline: float, budget: list[int], *, everything: bool = False) -> bool:
    """Remove what `uid` owns in the directory held by `dir_fd`, whole directories included; with `everything`
    (a directory the uid owns) every entry goes, whoever owns it: the directory's owner may unlink them. True
    when nothing of the uid is left.

    Every step is relative to a held directory (``*at`` calls): another session of the tenant may swap a
    directory on the way for a symlink, and a path string would then take the scrub, acting as this uid,
    somewhere else (into /workspace, whose files the uid's group may delete)."""
    try:
        names = os.listdir(dir_fd)
    except PermissionError:  # another uid's private directory: nothing of ours is reachable in it
        return not everything
    except OSError:
        return False
    clean = True
    for name in names:
        budget[0] -= 1
        if budget[0] < 0 or time.monotonic() > deadline:
            return False
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError:
            clean = False
            continue
        ours = st.st_uid == uid
        if stat.S_ISDIR(st.st_mode):
            clean &= _scrub_subdir(dir_fd, name, st, uid, deadline, budget)
        elif ours or everything:
            try:
                os.unlink(name, dir_fd=dir_fd)  # unlinkat of the entry itself: a symlink goes, not its target
            except FileNotFoundError:
                pass
            except OSError:
                clean &= not ours  # another's file we may not unlink holds nothing of ours
    return clean


def _scrub_subdir(parent: int, name: str, st: os.stat_result, uid: int, deadline: float, budget: list[int]) -> bool:
    """A directory entry: scrubbed, and removed whole when the uid owns it. It is opened without following a
    link (O_PATH, so even a mode-000 directory of ours opens) and must still be the directory that was looked at."""
    try:
        handle = os.open(name, _PATH_FLAGS | os.O_DIRECTORY, dir_fd=parent)
    except FileNotFoundError:
        return True
    except OSError:
        return st.st_uid != uid
    try:
        now = os.fstat(handle)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False  # swapped since it was looked at: try no further, keep the uid out
        ours = now.st_uid == uid
        if ours:
            with contextlib.suppress(OSError):
                os.chmod(f"/proc/self/fd/{handle}", 0o700)  # our own directory: we may list and empty it
        try:
            fd = os.open(f"/proc/self/fd/{handle}", _DIR_FLAGS)
        except PermissionError:
            return not ours
        except OSError:
            return False
        try:
            emptied = _scrub_dir(fd, uid, deadline, budget, everything=ours)
        finally:
            os.close(fd)
    finally:
        os.close(handle)
    if not ours:
        return emptied
    if not emptied:
        return False
    try:
        os.rmdir(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True
