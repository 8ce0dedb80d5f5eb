"""Naming a fork bomb: a call whose leftovers multiply gets ``limit: "pids"``, however early they are killed.

The sweep kills a call's leftovers within milliseconds of its end, usually long before a fork bomb fills the
pids limit, so the cgroup's own count of refused forks (stats.pids_refused_since_last_check) stays still. Counting
what the sweep killed is not enough either: on a loaded machine the bomb may have made only three or four
processes by then, and three leftover sleepers look the same. What tells them apart is growth. So when a call
left something behind, the runner watches it for a moment *before* the sweep: a count of the leftovers (the
uid's processes that descend from an untracked child of the runner, i.e. from an orphan of the call, not from
live work such as a background process) taken every few milliseconds, until it reaches the threshold (a runaway),
stops growing for a few samples (not one), or a short bound passes. Only calls that leave processes behind pay
for it (the check costs one read of the runner's own child list otherwise), and the leftovers are still killed
before the answer. The count stops at half the pids limit, so the watch never lets a bomb starve the tenant's
other work.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from toolrunner.runner import stats
from toolrunner.runner.procs import REGISTRY, all_pids

if TYPE_CHECKING:
    from toolrunner.runner.context import Call
    from toolrunner.runner.identity import Ident

RUNAWAY = 16  # leftover processes that make a runaway tree (a fork bomb), at most half the pids limit
WATCH_S = 0.25  # the longest a call's answer waits on the watch
QUIET_SAMPLES = 4  # samples in a row without a new peak that end the watch: the leftovers are not multiplying
SAMPLE_S = 0.003  # between samples: long enough for a forking process to run, even on a throttled CPU quota


def threshold() -> int:
    """RUNAWAY, or half the container's pids limit when that is lower."""
    limit = stats.pids_limit()
    return RUNAWAY if limit is None else max(1, min(RUNAWAY, limit // 2))


def runaway(call: Call, left: int) -> None:
    """Name the pids limit for a call that left (or grew, while watched) a runaway process tree."""
    if call.limit is None and left > 0 and left >= threshold():
        call.limit = "pids"


def watch(ident: Ident) -> int:
    """The most leftovers of `ident`'s call seen while watching them grow (0 when it left nothing, or when
    the uid is not the session's alone and cannot be told apart from the runner's own processes)."""
    if not REGISTRY.identities.exclusive() or ident.own or not REGISTRY.untracked_children_left(ident.uid):
        return 0
    enough = threshold()
    deadline = time.monotonic() + WATCH_S
    peak = count = leftovers(ident.uid)
    quiet = 0
    while count and count < enough and quiet < QUIET_SAMPLES and time.monotonic() < deadline:
        time.sleep(SAMPLE_S)
        count = leftovers(ident.uid)
        if count > peak:
            peak, quiet = count, 0
        else:
            quiet += 1
    return peak


def leftovers(uid: int) -> int:
    """Live processes of `uid` that descend from an untracked child of the runner (an orphan of a call)."""
    me = REGISTRY.me
    tracked = REGISTRY.tracked()
    parents: dict[int, int] = {}
    for pid in all_pids():
        entry = _uid_parent_live(pid)
        if entry is not None and entry[0] == uid:
            parents[pid] = entry[1]
    count = 0
    for pid in parents:
        top, hops = pid, 0
        while parents.get(top, me) != me and hops < 4096:
            top, hops = parents[top], hops + 1
        if top in parents and parents[top] == me and top not in tracked:
            count += 1
    return count


def _uid_parent_live(pid: int) -> tuple[int, int] | None:
    """(real uid, parent pid) of a live process; None once it is gone or a zombie."""
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    uid = parent = None
    for line in text.split(b"\n"):
        if line.startswith(b"State:") and line[6:].split()[:1] == [b"Z"]:
            return None
        if line.startswith(b"PPid:"):
            parent = int(line.split()[1])
        elif line.startswith(b"Uid:"):
            uid = int(line.split()[1])
            break  # Uid comes after State and PPid
    if uid is None or parent is None:
        return None
    return uid, parent
