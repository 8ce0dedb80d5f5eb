"""The runner's machine code stays in memory when a session fills the memory limit.

Tool processes are the OOM killer's first choice (oom_score_adj 1000), but the OOM killer only acts once
reclaim fails, and before that the kernel reclaims file pages: among them the text of the runner's own
interpreter and libraries, which it then reads back from the image (through the overlay) at the next fault.
With the cgroup full of a session's anonymous memory the runner faults, waits, and faults again, and under a
loaded machine it stayed silent for the host's whole unresponsive bound (30 s) and was replaced
(tests/security/test_trust_lifetime.py, memory pressure, at load 30). Its heap is anonymous memory and stays
(the container has no swap); its code is what it must keep. ``mlock`` needs no capability within
RLIMIT_MEMLOCK (8 MiB in Docker's default), and the code of the runner's interpreter fits.
"""

from __future__ import annotations

import ctypes
import resource

# Code the runner seldom runs (TLS and HMAC, for the egress key): not worth ~2.5 MiB of every idle container,
# whose image's pages are not shared when the engine stores layers with fuse-overlayfs.
SKIP = ("libcrypto", "libssl")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


def lock_code(maps: str = "/proc/self/maps") -> int:
    """mlock the executable file mappings of this process (but SKIP), largest first, within RLIMIT_MEMLOCK;
    returns the bytes locked. Best effort: what does not fit or fails stays as it was."""
    budget = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    if budget == resource.RLIM_INFINITY:
        budget = 1 << 62
    ranges = []
    with open(maps, encoding="ascii", errors="replace") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and "x" in fields[1] and fields[5].startswith("/") and not any(
                    name in fields[5] for name in SKIP):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((end - start, start))
    locked = 0
    for size, start in sorted(ranges, reverse=True):
        if locked + size <= budget and _libc.mlock(start, size) == 0:
            locked += size
    return locked
