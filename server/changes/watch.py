"""``WorkspaceWatch``: one tenant's workspace under inotify, an index of its files, and the calls in flight.

The host sees every write the container makes on the bind-mounted filesystem as an inotify event, queued at
the moment of the write; so draining the queue when a call's result arrives gives the files the call (and its
background processes) touched while it ran. Each touched path is then compared with the index (size, mtime,
SHA-256 as of the last report) to say created, modified or deleted, and the index takes the new state, which
is the next call's "before".

Attribution. A change drained while calls of the tenant are in flight goes to each of them, marked
``overlapping`` when there were several; one drained while none is in flight (a background process between
calls) is resolved when the next call opens and reported with that call as ``between_calls``.

The tracker holds ``lock`` around each begin/end and settle, so they may run in a worker thread: applying a
drain that has directory events or an overflow walks a tree (``collect`` says so), settling many paths is long;
both stay off the event loop, which the tenant's process must not be able to hold.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from server.changes import inotify as ino
from server.changes.state import HASH_MAX_BYTES, FileState, state_at, walk

HEAVY = ino.IN_Q_OVERFLOW | ino.IN_ISDIR  # applying these walks a tree or the index: a worker thread's work
MAX_DIRS = 20_000  # watches per workspace (the host's max_user_watches is shared by every tenant)
SCAN_HASH_MAX = 16 * 1024 * 1024  # the first index hashes files up to this size...
SCAN_HASH_BUDGET = 256 * 1024 * 1024  # ...and this much in all; past it a modified file's "before" has no hash

ChangeKind = Literal["created", "modified", "deleted"]


@dataclass(frozen=True)
class Change:
    path: str
    kind: ChangeKind
    before: FileState | None
    after: FileState | None
    between_calls: bool = False
    overlapping: bool = False


@dataclass
class _Window:
    before: dict[str, FileState | None] = field(default_factory=dict)
    overlapping: set[str] = field(default_factory=set)


def classify(before: FileState | None, after: FileState | None) -> ChangeKind | None:
    """What happened between two states of one path; None when nothing did (or it came and went)."""
    if before is None:
        return None if after is None else "created"
    if after is None:
        return "deleted"
    if before.sha256 is not None and after.sha256 is not None:
        return None if (before.size, before.sha256) == (after.size, after.sha256) else "modified"
    same = (before.size, before.mtime_ns, before.ctime_ns) == (after.size, after.mtime_ns, after.ctime_ns)
    return None if same else "modified"


class WorkspaceWatch:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._ino = ino.Inotify()
        self._dirs: dict[int, str] = {}  # wd -> directory relative to the root ("" is the root)
        self.index: dict[str, FileState] = {}
        self._windows: dict[str, _Window] = {}
        self._idle: dict[str, FileState | None] = {}
        self._between: list[Change] = []
        self.note: str | None = None  # a cap reached or events lost: said in every report
        self.dead = False  # unmounted or the root went away: the tracker builds a new watch
        self.dev = -1
        self._hashed = 0
        self._queued: list[ino.Event] = []  # read by collect, applied by the next begin/end
        self.lock = asyncio.Lock()  # the tracker's: one begin/end/settle at a time, wherever it runs

    # ---- building ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Watch every directory and index every file (hashing up to the scan budget)."""
        with self._root() as root:
            self.dev = os.fstat(root).st_dev
            for rel in walk(root, "", self._on_dir):
                state = state_at(root, rel, SCAN_HASH_MAX if self._hashed < SCAN_HASH_BUDGET else -1)
                if state is not None:
                    self.index[rel] = state
                    self._hashed += state.size if state.sha256 is not None else 0

    def _root(self) -> _Fd:
        return _Fd(os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))

    def _on_dir(self, fd: int, rel: str) -> bool:
        if len(self._dirs) >= MAX_DIRS:
            self.note = f"the workspace has more than {MAX_DIRS} directories: changes in the rest are not seen"
            return False
        try:
            self._dirs[self._ino.add(fd)] = rel
        except OSError as exc:  # ENOSPC: the host's max_user_watches
            self.note = f"could not watch every directory ({exc.strerror}): changes in some are not seen"
            return False
        return True

    def close(self) -> None:
        self._ino.close()

    # ---- calls --------------------------------------------------------------------------------------
    # The tracker drives a call as collect → begin → states → settle, ..., collect → end → states → settle,
    # under ``lock``; each step but collect may run in a worker thread. ``open``/``finish`` do the same in one
    # step (tests, small tools).

    def backlog(self) -> int:
        """Bytes of events waiting in the kernel: past ``INLINE_EVENT_BYTES`` reading them is a worker's job."""
        return self._ino.pending_bytes()

    def collect(self) -> bool:
        """Take the queued events (the next begin/end applies exactly these); True when applying them walks a
        tree or the index (a directory came or went, or events were lost)."""
        self._queued.extend(self._ino.read())
        return any(event.mask & HEAVY for event in self._queued)

    def begin(self, call_id: str, *, collected: bool = False) -> dict[str, FileState | None]:
        """A call starts: its window opens; returns the changes seen while no call ran, still to settle."""
        self._drain(collected)
        idle, self._idle = self._idle, {}
        self._windows[call_id] = _Window()
        return idle

    def end(self, call_id: str, *, collected: bool = False) -> tuple[dict[str, FileState | None], set[str]]:
        """A call ended: the before-states of the paths touched while it ran, and those touched in overlap."""
        self._drain(collected)
        window = self._windows.pop(call_id, _Window())
        return window.before, window.overlapping

    def states(self, paths: Iterable[str], hash_max: int = HASH_MAX_BYTES) -> dict[str, FileState | None]:
        """The paths' states now (a pure read beneath the root: safe in a worker thread)."""
        paths = list(paths)
        if not paths:
            return {}
        with self._root() as root:
            return {rel: state_at(root, rel, hash_max) for rel in paths}

    def settle(self, before: dict[str, FileState | None], now: dict[str, FileState | None], *,
               between: bool = False, overlapping: set[str] | None = None) -> list[Change]:
        """The index takes the new states; the changes between ``before`` and ``now``, by path."""
        out: list[Change] = []
        for rel, old in sorted(before.items()):
            new = now.get(rel)
            if new is None:
                self.index.pop(rel, None)
            else:
                self.index[rel] = new
            kind = classify(old, new)
            if kind is not None:
                out.append(Change(rel, kind, old, new, between, rel in (overlapping or ())))
        return out

    def hold_between(self, changes: list[Change]) -> None:
        self._between.extend(changes)

    def take_between(self) -> list[Change]:
        out, self._between = self._between, []
        return out

    def open(self, call_id: str) -> None:
        idle = self.begin(call_id)
        self.hold_between(self.settle(idle, self.states(idle), between=True))

    def finish(self, call_id: str, *, report_between: bool = True) -> tuple[list[Change], str | None]:
        """What the call changed (and what changed between calls before it, unless ``report_between`` is False:
        a files API request leaves those for the next tool call), and the report's note."""
        before, overlapping = self.end(call_id)
        changes = self.settle(before, self.states(before), overlapping=overlapping)
        return (self.take_between() + changes if report_between else changes), self.note

    # ---- events -------------------------------------------------------------------------------------

    def _touch(self, rel: str) -> None:
        if not self._windows:
            self._idle.setdefault(rel, self.index.get(rel))
            return
        for window in self._windows.values():
            window.before.setdefault(rel, self.index.get(rel))
            if len(self._windows) > 1:
                window.overlapping.add(rel)

    def _drain(self, collected: bool) -> None:
        """Apply the queued events (those ``collect`` took, or all queued now). Directory events are gathered
        and applied once per path at the end: a tenant swapping a directory back and forth in a loop costs one
        walk per drain, not one per event."""
        if not collected:
            self.collect()
        events, self._queued = self._queued, []
        if any(event.mask & ino.IN_Q_OVERFLOW for event in events):
            events = self._after_overflow(events)
        gone: set[str] = set()
        came: set[str] = set()
        for event in events:
            base = self._dirs.get(event.wd)
            if event.mask & (ino.IN_IGNORED | ino.IN_UNMOUNT):
                self._dirs.pop(event.wd, None)
                self.dead = self.dead or base == "" or bool(event.mask & ino.IN_UNMOUNT)
                continue
            if base is None or event.mask & (ino.IN_DELETE_SELF | ino.IN_MOVE_SELF):
                continue  # the parent's event names the directory itself
            rel = f"{base}/{event.name}" if base else event.name
            if not event.mask & ino.IN_ISDIR:
                self._touch(rel)
            elif event.mask & (ino.IN_CREATE | ino.IN_MOVED_TO):
                came.add(rel)
            elif event.mask & (ino.IN_MOVED_FROM | ino.IN_DELETE):
                gone.add(rel)
        self._drop_trees(gone)  # first what went, then what is there now (a path may be both)
        for rel in sorted(came):
            self._add_tree(rel)

    def _add_tree(self, rel: str) -> None:
        """A directory appeared (made or moved in): watch it and its subdirectories; its files are new."""
        with self._root() as root:
            for child in walk(root, rel, self._on_dir):
                self._touch(child)

    def _drop_trees(self, gone: set[str]) -> None:
        """Directories went (removed or moved away): their watches go, their indexed files are touched. One
        pass over the watches and the index for all of them, by each path's ancestors: a pass per directory
        let a tenant removing thousands of directories hold the event loop for seconds."""
        if not gone:
            return
        for wd, path in list(self._dirs.items()):
            if path in gone or _under(path, gone):
                del self._dirs[wd]
                self._ino.remove(wd)
        for path in [p for p in self.index if _under(p, gone)]:
            self._touch(path)

    def _after_overflow(self, events: list[ino.Event]) -> list[ino.Event]:
        """Events were lost: a rescan finds every change, so of these only the watches' own lifecycle events
        matter (a removed watch, an unmount). A tenant flooding the queue makes every drain one of these; going
        through its thousands of path events as well doubled the work for nothing."""
        self._rescan()
        return [event for event in events if event.mask & (ino.IN_IGNORED | ino.IN_UNMOUNT)]

    def _rescan(self) -> None:
        """The kernel's queue overflowed (events lost): compare a fresh walk with the index instead."""
        with self._root() as root:
            seen = set(walk(root, "", self._on_dir))
        for rel in seen | set(self.index):
            self._touch(rel)
        self.note = "inotify events were lost (queue overflow): changes since were found by a full rescan"


def _under(path: str, dirs: set[str]) -> bool:
    """Whether one of ``path``'s ancestor directories is in ``dirs``."""
    cut = path.find("/")
    while cut != -1:
        if path[:cut] in dirs:
            return True
        cut = path.find("/", cut + 1)
    return False


class _Fd:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


__all__ = ["Change", "WorkspaceWatch", "classify"]
