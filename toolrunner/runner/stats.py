"""The container's cgroup as the runner sees it: usage for `stats`, and the OOM-kill counter that tells a
memory-limit kill apart from any other SIGKILL. Best effort on cgroup v1 and v2."""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from toolrunner.runner import heldfile

CG = "/sys/fs/cgroup"


def _read(path: str) -> str | None:
    """A counter file's text, from a held descriptor (heldfile): every call reads two or three of them."""
    data = heldfile.read(path)
    return None if data is None else data.decode("ascii", "replace").strip()


def _int(path: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    if text == "max":
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _keyed(path: str, key: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            try:
                return int(parts[1])
            except ValueError:
                return None
    return None


@functools.cache
def cgroup_v2() -> bool:
    """Fixed for the runner's life; cached, as a stat of /sys costs tens of µs inside a container."""
    return os.path.exists(f"{CG}/cgroup.controllers")


def oom_kills() -> int:
    """How many processes the memory cgroup has OOM-killed so far (0 when unknown)."""
    if cgroup_v2():
        value = _keyed(f"{CG}/memory.events", "oom_kill")
    else:
        value = _keyed(f"{CG}/memory/memory.oom_control", "oom_kill")
    return value or 0


def limit_hits() -> int:
    """How often usage reached the memory limit (v1 memory.failcnt, v2 memory.events `max`)."""
    if cgroup_v2():
        return _keyed(f"{CG}/memory.events", "max") or 0
    return _int(f"{CG}/memory/memory.failcnt") or 0


def memory_marks() -> tuple[int, int]:
    """(OOM kills, limit hits) now; compare with a later reading to tell whether memory ran out meanwhile."""
    if not cgroup_v2():
        return oom_kills(), limit_hits()
    text = _read(f"{CG}/memory.events") or ""  # one read for both counters: every call takes this reading
    found = dict(line.split(maxsplit=1) for line in text.splitlines() if len(line.split()) == 2)
    try:
        return int(found.get("oom_kill", 0)), int(found.get("max", 0))
    except ValueError:
        return 0, 0


def oom_since(before: tuple[int, int], wait_s: float = 0.3) -> bool:
    """Whether the cgroup OOM-killed something since `before`.

    The kernel sends SIGKILL before it counts the kill (and may print to the console in between), so a
    parent can see its child die before ``oom_kill`` moves: wait up to `wait_s` for it. If it never moves
    but usage hit the limit in the meantime, a SIGKILL nobody asked for is still the memory limit.
    """
    deadline = time.monotonic() + wait_s
    while True:
        kills, hits = memory_marks()
        if kills > before[0]:
            return True
        if time.monotonic() >= deadline:
            return hits > before[1]
        time.sleep(0.01)


_pids_refusals_seen = [0]


def pids_refused_since_last_check() -> bool:
    """Whether the pids cgroup refused a fork since the previous check (its `max` event counter rose)."""
    path = f"{CG}/pids.events" if cgroup_v2() else f"{CG}/pids/pids.events"
    count = _keyed(path, "max")
    if count is None:
        return False
    rose, _pids_refusals_seen[0] = count > _pids_refusals_seen[0], count
    return rose


@functools.cache
def pids_limit() -> int | None:
    """The container's pids limit (fixed for the runner's life), or None when unlimited or unknown."""
    return _int(f"{CG}/pids.max") if cgroup_v2() else _int(f"{CG}/pids/pids.max")


def snapshot() -> dict[str, Any]:
    """Memory, pids and CPU of the cgroup; a field is null when this kernel or mount does not say."""
    if cgroup_v2():
        limit = _int(f"{CG}/memory.max")
        return {
            "cgroup": 2,
            "memory_bytes": _int(f"{CG}/memory.current"),
            "memory_limit_bytes": limit,
            "memory_peak_bytes": _int(f"{CG}/memory.peak"),
            "oom_kills": oom_kills(),
            "pids": _int(f"{CG}/pids.current"),
            "pids_limit": _int(f"{CG}/pids.max"),
            "cpu_usage_ns": (_keyed(f"{CG}/cpu.stat", "usage_usec") or 0) * 1000,
        }
    limit = _int(f"{CG}/memory/memory.limit_in_bytes")
    if limit is not None and limit >= 1 << 60:
        limit = None
    return {
        "cgroup": 1,
        "memory_bytes": _int(f"{CG}/memory/memory.usage_in_bytes"),
        "memory_limit_bytes": limit,
        "memory_peak_bytes": _int(f"{CG}/memory/memory.max_usage_in_bytes"),
        "oom_kills": oom_kills(),
        "pids": _int(f"{CG}/pids/pids.current"),
        "pids_limit": _int(f"{CG}/pids/pids.max"),
        "cpu_usage_ns": _int(f"{CG}/cpuacct/cpuacct.usage"),
    }
