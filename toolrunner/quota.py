"""Workspace disk quotas enforced by the kernel: a loop-mounted ext4 image per workspace (docs/workspace-quota.md).

The data disk is ext4 (no XFS project quota, and Docker's ``storage_opt size`` needs one), so each tenant's
workspace is its own small filesystem: a sparse image ``<data_dir>/quota/<tenant>.ext4`` (outside the
workspace, root's), made with ``mkfs.ext4 -N <inodes> -m 0`` and mounted ``nosuid,nodev`` over the workspace
directory *before* the container is created, so the container's bind mount sees it. A writer then gets ENOSPC
at the image's size or inode count, whatever it does. The host, never the sandbox's text, decides that a
call hit the quota: ``statvfs`` of the mount after the call (``mark_disk_limit``).

Mounts are the kernel's, so they outlive the server: ``LoopQuota.ensure`` finds an existing mount of the
same image and reuses it (growing it online with ``resize2fs`` when the policy grew) instead of stacking
another. ``release`` unmounts and detaches the loop device (direct I/O: as fast as the plain disk) when the
tenant's sandbox is removed; the image, which holds the files, stays.

When the server cannot mount (not root, no ``mkfs.ext4``, no loop device) the workspace stays a plain
directory, the report says ``enforced: false`` with the reason, and it is logged at ERROR; but a workspace
whose files already live in an image that cannot be mounted is refused (``SANDBOX_START_FAILED``) rather
than shown empty.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolrunner.errors import SandboxDiskFull, SandboxStartFailed
from toolrunner.loopdev import LOCK, loops_of, output, release_all, run, unmount, which
from toolrunner.mounts import loop_backing_file, mounted_at, mounts
from toolrunner.results import ToolResult

log = logging.getLogger(__name__)
MIB = 1024 * 1024
BYTES_PER_INODE = 16 * 1024  # the inode count when a policy gives only a size
JOURNAL_MB = 4  # ext4's smallest journal: crash safety without spending the quota on it
# discard: blocks of deleted files are punched out of the sparse image (the loop device turns a discard into
# a hole in the backing file), so an image gives the host its disk back instead of only ever growing.
MOUNT_OPTIONS = "nosuid,nodev,noatime,discard"
RESERVE_FRACTION = 0.05  # default reserve of the data disk: max(5 % of it, 2 GiB)
RESERVE_MIN_BYTES = 2 * 1024 * MIB
# ext4 refuses a write with a little space still counted free (delayed allocation reserves blocks, metadata
# needs some): measured 0.7 MiB left on 64 MiB after `dd` hit ENOSPC. Below this much free, the quota is hit.
FULL_MARGIN_BYTES = 2 * MIB
SIGXFSZ = int(signal.SIGXFSZ)
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class QuotaSpec:
    """What the policy asks for one workspace."""

    bytes: int
    inodes: int


def spec_for(disk_mb: int | None, disk_inodes: int | None) -> QuotaSpec | None:
    """The quota a policy's ``disk_mb``/``disk_inodes`` ask for; None when it sets no size."""
    if disk_mb is None:
        return None
    size = disk_mb * MIB
    return QuotaSpec(size, disk_inodes if disk_inodes is not None else max(1024, size // BYTES_PER_INODE))


@dataclass(frozen=True)
class QuotaReport:
    """Whether a workspace's quota holds, and on what (for ``GET /v1/sandbox`` and the tool results)."""

    workspace: Path
    spec: QuotaSpec | None
    enforced: bool
    image: Path | None = None
    reason: str | None = None  # why it is not enforced, or what differs from the policy

    def usage(self) -> dict[str, Any]:
        """The quota as the API shows it: asked, enforced, and (when mounted) the filesystem's own figures."""
        out: dict[str, Any] = {
            "enforced": self.enforced, "mechanism": "loop-ext4" if self.enforced else None,
            "bytes": self.spec.bytes if self.spec else None, "inodes": self.spec.inodes if self.spec else None,
            "used_bytes": None, "used_inodes": None, "free_bytes": None, "free_inodes": None,
            "reason": self.reason,
        }
        if self.enforced:
            with contextlib.suppress(OSError):
                st = os.statvfs(self.workspace)
                out.update(bytes=st.f_blocks * st.f_frsize, inodes=st.f_files,
                           used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize, used_inodes=st.f_files - st.f_ffree,
                           free_bytes=st.f_bavail * st.f_frsize, free_inodes=st.f_favail)
        return out

    def full(self, need_bytes: int = 0) -> bool:
        """True when the mounted filesystem has no room left (or less than ``need_bytes``), from statvfs."""
        if not self.enforced:
            return False
        try:
            if not _no_room(os.statvfs(self.workspace), need_bytes):
                return False
            # Blocks of deleted files return to the free count only when the journal commits (up to 5 s
            # later): commit now, so that a tenant who just deleted is not told the quota is hit.
            _syncfs(self.workspace)
            return _no_room(os.statvfs(self.workspace), need_bytes)
        except OSError:
            return False


def _no_room(st: os.statvfs_result, need_bytes: int) -> bool:
    return st.f_favail == 0 or st.f_bavail * st.f_frsize < max(FULL_MARGIN_BYTES, need_bytes)


def _syncfs(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed")
    finally:
        os.close(fd)


def mark_disk_limit(report: QuotaReport | None, result: ToolResult, input: dict[str, Any]) -> ToolResult:
    """``result`` with ``limit: "disk"`` exactly when the host sees the quota hit: after the call the filesystem
    is full, or a file tool failed for lack of room (RESOURCE_LIMIT) and less is free than it tried to write.

    Where a quota is enforced, only the host's statvfs decides: a "disk" the runner inferred from output text
    is dropped unless the host agrees; the one it takes from the exit status (SIGXFSZ, the per-file size
    limit) is kept. The runner's error code only says when to look twice."""
    if report is None or not report.enforced or result.limit not in (None, "disk"):
        return result
    need = 0
    if result.error is not None and result.error.code == "RESOURCE_LIMIT":
        content = input.get("content", input.get("new_string", ""))
        need = len(content.encode("utf-8", "surrogatepass")) if isinstance(content, str) else 0
    if report.full(need):
        limit: str | None = "disk"
    else:
        limit = "disk" if result.limit == "disk" and result.exit_code == 128 + SIGXFSZ else None
    return result if limit == result.limit else result.model_copy(update={"limit": limit})


def unavailable_reason() -> str | None:
    """Why this server cannot mount a quota filesystem, or None if it can (root, mkfs.ext4, loop devices)."""
    if os.geteuid() != 0:
        return "the server is not root, so it cannot mount a loop filesystem"
    for tool in ("mkfs.ext4", "e2fsck", "resize2fs", "mount", "umount", "losetup"):
        if which(tool) is None:
            return f"{tool} is not installed (e2fsprogs / util-linux)"
    if not os.path.exists("/dev/loop-control") and not os.path.exists("/dev/loop0"):
        return "no loop device (/dev/loop-control) on this machine"
    return None


def warn_at_start(quota_asked: bool) -> str | None:
    """Say loudly, once at start, that the policies ask for quotas this server cannot enforce; the reason."""
    reason = unavailable_reason() if quota_asked else None
    if reason is not None:
        log.error("WORKSPACE DISK QUOTAS ARE NOT ENFORCED: %s. Tenants can fill this host's disk (and the audit "
                  "log's); GET /v1/sandbox shows quota.enforced=false. Run the server as root with e2fsprogs "
                  "and loop devices (docs/workspace-quota.md).", reason)
    return reason


def default_reserve(st: os.statvfs_result) -> int:
    """The data disk's reserve when the setting gives none: max(5 % of the disk, 2 GiB)."""
    return max(int(st.f_blocks * st.f_frsize * RESERVE_FRACTION), RESERVE_MIN_BYTES)


def check_disk_budget(directory: Path, size: int, reserve_bytes: int | None) -> None:
    """Refuse (``SandboxDiskFull``) a new image of ``size`` bytes when, filled, it would leave the disk of
    ``directory`` less free than the reserve (None: ``default_reserve``; 0: no check). Images are sparse, so
    the sum of all quotas may exceed the disk; this bounds how many *new* tenants a nearly full disk admits
    (in header mode any client can name one), and the reserve keeps the audit log and database writable."""
    if reserve_bytes == 0:
        return
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    reserve = default_reserve(st) if reserve_bytes is None else reserve_bytes
    if free - size < reserve:
        log.error("refusing a new workspace quota image of %d MiB: %d MiB free on the data disk, reserve %d MiB",
                  size // MIB, free // MIB, reserve // MIB)
        raise SandboxDiskFull(f"the server's data disk is nearly full: a new workspace of {size // MIB} MiB "
                              f"would leave less than its reserve of {reserve // MIB} MiB free "
                              f"({free // MIB} MiB free now); existing workspaces keep working")


class LoopQuota:
    """The loop-mounted ext4 image that bounds one workspace directory."""

    def __init__(self, image: Path, workspace: Path, reserve_bytes: int | None = None) -> None:
        self.image = image
        self.workspace = workspace
        self.reserve_bytes = reserve_bytes

    def _device(self) -> str | None:
        """Our loop device if the visible mount at the workspace is our image, else None."""
        mount = mounted_at(self.workspace)
        if mount is None or mount.fstype != "ext4":
            return None
        backing = loop_backing_file(mount.source)
        return mount.source if backing is not None and backing == self.image else None

    def ensure(self, spec: QuotaSpec) -> QuotaReport:
        """Mount (or find mounted) the workspace's image at the size the policy asks; never raises."""
        reason = unavailable_reason()
        try:
            if reason is None:
                with LOCK:
                    return self._ensure(spec)
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"could not mount the workspace's quota filesystem: {exc}"
        if self.image.exists() and self._device() is None:
            # The tenant's files are in the image: a plain directory in its place would look like data loss.
            raise SandboxStartFailed(f"the workspace's files are in {self.image}, which cannot be mounted: {reason}")
        return self._unenforced(spec, reason)

    def _ensure(self, spec: QuotaSpec) -> QuotaReport:
        device = self._device()
        if device is None:
            other = mounted_at(self.workspace)
            if other is not None:
                return self._unenforced(spec, f"the workspace is already a mount point ({other.fstype} from "
                                              f"{other.source}); not mounting another over it")
            fresh = not self.image.exists()
            if fresh:
                self._make_image(spec)
            elif spec.bytes > self.image.stat().st_size:
                self._grow_offline(spec)
            if any(self.workspace.iterdir()):
                self._move_in_existing_files()
            before = self.workspace.stat()
            self._mount_at(self.workspace)
            device = self._device()
            if device is None:
                raise OSError(f"mounted {self.image} at {self.workspace} but cannot find the mount")
            if fresh:  # the new filesystem's root takes the directory's owner and mode (mkfs made it root's)
                os.chown(self.workspace, before.st_uid, before.st_gid)
                os.chmod(self.workspace, stat.S_IMODE(before.st_mode))
            log.info("workspace quota: mounted %s at %s (%s)", self.image.name, self.workspace, device)
        else:
            self._discarding()
        return self._grown(spec, device)

    def _discarding(self) -> None:
        """A mount made by an earlier version (without ``discard``) gets it now, so its image shrinks too."""
        mount = mounted_at(self.workspace)
        if mount is not None and "discard" not in mount.super_options.split(","):
            run("mount", "-o", "remount,discard", str(self.workspace))

    def _mount_at(self, point: Path) -> None:
        """Attach the image to a loop device with direct I/O and mount it at ``point``.

        Direct I/O: measured, a buffered loop device writes at 190-300 MB/s with fsync where the plain disk
        does 1.5 GB/s (every block cached twice, flushed through the backing file); with direct I/O, as fast
        as the plain disk. Loop devices of this image left unmounted (a crash between attach and mount) are
        detached first, so none piles up."""
        for stale in loops_of(self.image):
            if not any(m.source == stale for m in mounts()):
                with contextlib.suppress(OSError):
                    run("losetup", "-d", stale)
        device = output("losetup", "--direct-io=on", "--find", "--show", str(self.image)).strip()
        try:
            run("mount", "-t", "ext4", "-o", MOUNT_OPTIONS, device, str(point))
        except BaseException:
            with contextlib.suppress(OSError):
                run("losetup", "-d", device)
            raise

    def _make_image(self, spec: QuotaSpec) -> None:
        self.image.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        check_disk_budget(self.image.parent, spec.bytes, self.reserve_bytes)
        tmp = self.image.with_suffix(".new")
        with open(tmp, "wb") as f:
            f.truncate(spec.bytes)  # sparse: disk is used as files are written
        # -m 0: no blocks reserved for root (the tools are not root); 4 KiB blocks whatever the size.
        run("mkfs.ext4", "-q", "-F", "-b", "4096", "-N", str(spec.inodes), "-m", "0", "-J", f"size={JOURNAL_MB}",
             "-E", "nodiscard", str(tmp))
        os.replace(tmp, self.image)

    def _move_in_existing_files(self) -> None:
        """Files written before the quota existed move into the image (so they count), through a staging mount."""
        staging = self.image.with_suffix(".staging")
        staging.mkdir(exist_ok=True, mode=0o700)
        self._mount_at(staging)
        try:
            run("cp", "-a", "--", f"{self.workspace}/.", f"{staging}/")
        finally:
            unmount(staging)
            staging.rmdir()
        for entry in self.workspace.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        log.warning("workspace quota: moved the existing files of %s into %s", self.workspace, self.image.name)

    def _grow_offline(self, spec: QuotaSpec) -> None:
        """Grow an unmounted image to the policy's size (e2fsck first: resize2fs asks for a checked fs)."""
        old = self.image.stat().st_size
        with open(self.image, "r+b") as f:
            f.truncate(spec.bytes)
        run("e2fsck", "-f", "-p", str(self.image), ok=(0, 1))  # 1: it fixed something, e.g. a lost+found
        run("resize2fs", str(self.image))
        log.info("workspace quota: grew %s from %d to %d MiB", self.image.name, old // MIB, spec.bytes // MIB)

    def _grown(self, spec: QuotaSpec, device: str) -> QuotaReport:
        """The report for a mounted image, grown online first if the policy asks for more."""
        size = self.image.stat().st_size
        if spec.bytes > size:
            try:
                with open(self.image, "r+b") as f:
                    f.truncate(spec.bytes)
                run("losetup", "-c", device)
                run("resize2fs", device)
            except OSError as exc:
                with open(self.image, "r+b") as f:  # the filesystem still ends at the old size
                    f.truncate(size)
                with contextlib.suppress(OSError):
                    run("losetup", "-c", device)
                # Online growth needs CAP_SYS_RESOURCE (some VMs' root lacks it): the image grows offline the
                # next time it is mounted, i.e. after the tenant's sandbox is removed (DELETE /v1/sandbox).
                return QuotaReport(self.workspace, spec, True, self.image,
                                   f"the policy grew to {spec.bytes // MIB} MiB but the mounted filesystem could "
                                   f"not grow online ({exc}); it grows when the tenant's sandbox is next removed")
            log.info("workspace quota: grew %s online from %d to %d MiB", self.image.name, size // MIB,
                     spec.bytes // MIB)
            return QuotaReport(self.workspace, spec, True, self.image)
        if spec.bytes < size:
            return QuotaReport(self.workspace, spec, True, self.image,
                               f"the policy asks {spec.bytes // MIB} MiB but the image has {size // MIB} MiB: "
                               "an ext4 filesystem is not shrunk in place; the larger size holds")
        return QuotaReport(self.workspace, spec, True, self.image)

    def _unenforced(self, spec: QuotaSpec, reason: str) -> QuotaReport:
        log.error("workspace quota NOT ENFORCED for %s: %s", self.workspace, reason)
        return QuotaReport(self.workspace, spec, False, None, reason)

    def release(self) -> bool:
        """Unmount the workspace's image (the loop device goes with it); True if something was unmounted."""
        with LOCK:
            if self._device() is None:
                return False
            unmount(self.workspace)
            return True


def unenforced(workspace: Path, spec: QuotaSpec | None, reason: str) -> QuotaReport:
    """A report for a workspace the quota does not apply to (exempt, or no size in the policy)."""
    return QuotaReport(workspace, spec, False, None, reason)


__all__ = ["LoopQuota", "QuotaReport", "QuotaSpec", "mark_disk_limit", "release_all", "spec_for",
           "unavailable_reason", "unenforced", "warn_at_start"]
