"""What the kernel says is mounted where, and which file backs a loop device: the facts ``toolrunner.quota``
decides from, read from ``/proc/self/mountinfo`` and ``/sys/block`` rather than remembered, so a restarted
server sees the mounts an earlier one made.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

_OCTAL = re.compile(r"\\([0-7]{3})")


class Mount(NamedTuple):
    """One line of mountinfo: where, what filesystem type, from which source, with which options."""

    point: Path
    fstype: str
    source: str
    options: str
    super_options: str = ""  # the filesystem's own (``discard`` is one), shared by every mount of it


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounts(mountinfo: str = "/proc/self/mountinfo") -> list[Mount]:
    """Every mount of this process's namespace, in mount order (a later one at the same point hides earlier)."""
    out: list[Mount] = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, sep, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if not sep or len(fields) < 6 or len(tail) < 2:
                continue
            out.append(Mount(Path(_unescape(fields[4])), tail[0], _unescape(tail[1]), fields[5],
                             tail[2] if len(tail) > 2 else ""))
    return out


def mounted_at(point: Path) -> Mount | None:
    """The mount visible at ``point`` (the last one made there), or None if it is not a mount point."""
    found = None
    for mount in mounts():
        if mount.point == point:
            found = mount
    return found


def loop_backing_file(device: str) -> Path | None:
    """The file behind ``/dev/loopN`` (None if ``device`` is not a loop device or has no file)."""
    name = Path(device).name
    if not name.startswith("loop"):
        return None
    try:
        text = Path(f"/sys/block/{name}/loop/backing_file").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Path(text.removesuffix(" (deleted)")) if text else None
