"""Loop devices and mounts of quota images: the commands (``losetup``, ``mount``, ``umount``) and the sweep
that releases every quota mount and nosuid guard under a directory (tests' teardown, a data directory's
removal). One lock serialises them with ``toolrunner.quota``'s mkfs, mounts and resizes."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

from toolrunner.mounts import loop_backing_file, mounted_at, mounts
from toolrunner.nosuid import unguard

log = logging.getLogger(__name__)
LOCK = threading.Lock()  # mounts, mkfs and resizes one at a time: they are short and must not interleave


def which(tool: str) -> str | None:
    """The tool's path; the sbin directories too (mkfs.ext4, losetup live there, often off a service's PATH)."""
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin")


def run(*argv: str, timeout: float = 120, ok: tuple[int, ...] = (0,)) -> None:
    """Run a command; an exit status outside ``ok`` raises OSError with its stderr."""
    output(*argv, timeout=timeout, ok=ok)


def output(*argv: str, timeout: float = 120, ok: tuple[int, ...] = (0,)) -> str:
    """``run``, returning the command's stdout."""
    exe = which(argv[0]) or argv[0]
    done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode not in ok:
        raise OSError(f"{' '.join(argv)}: exit {done.returncode}: {(done.stderr or done.stdout).strip()[:500]}")
    return done.stdout


def unmount(point: Path) -> None:
    """Unmount ``point`` and detach its loop device (a device still in use, say by a lazily unmounted
    filesystem, is only marked to be freed with its last user: the kernel's autoclear)."""
    mount = mounted_at(point)
    try:
        run("umount", str(point))
    except OSError as exc:
        # Busy (a process on the host has its cwd there): detach now, the kernel finishes when it is let go.
        log.warning("umount %s failed (%s); detaching it lazily", point, exc)
        run("umount", "-l", str(point))
    if mount is not None and loop_backing_file(mount.source) is not None:
        with contextlib.suppress(OSError):
            run("losetup", "-d", mount.source)


def loops_of(image: Path) -> list[str]:
    """Loop devices attached to ``image`` (``losetup -j``)."""
    try:
        out = output("losetup", "-j", str(image))
    except OSError:
        return []
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


def release_all(root: Path) -> list[Path]:
    """Unmount what the sandbox mounted for workspaces under ``root`` (a data directory, or a whole test run's
    directory): every quota image (``.../quota/<tenant>.ext4``) under it wherever it is mounted, and every
    nosuid guard (``toolrunner.nosuid``) at or under it; returns the mount points released."""
    root = root.resolve()
    released: list[Path] = []
    with LOCK:
        for mount in sorted(mounts(), key=lambda m: len(m.point.parts), reverse=True):
            backing = loop_backing_file(mount.source)
            if _quota_image_under(backing, root):
                unmount(mount.point)
                released.append(mount.point)
            elif backing is None and (mount.point == root or root in mount.point.parents) and unguard(mount.point):
                released.append(mount.point)
        # Devices attached but never mounted (a server killed between losetup and mount) hold no mount point.
        in_use = {m.source for m in mounts()}
        for device in all_loops():
            if device not in in_use and _quota_image_under(loop_backing_file(device), root):
                with contextlib.suppress(OSError):
                    run("losetup", "-d", device)
    return released


def _quota_image_under(backing: Path | None, root: Path) -> bool:
    """Whether a loop device's backing file is a workspace quota image (``.../quota/<tenant>.ext4``) under root."""
    return (backing is not None and root in backing.parents and backing.parent.name == "quota"
            and backing.suffix == ".ext4")


def all_loops() -> list[str]:
    try:
        return [f"/dev/{name}" for name in os.listdir("/sys/block") if name.startswith("loop")]
    except OSError:
        return []
