"""A closed session's files in the shared scratch places go before its uid may be handed to another session
(toolrunner/runner/scrub.py). Run as root, as the suite is: the files are made as other uids with chown, and
the scrub acts with the session uid's own file-system credentials, as in the container."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolrunner.runner.identity import Ident
from toolrunner.runner.scrub import scratch_places, scrub, sysv_objects_of

pytestmark = pytest.mark.timeout(60)
SESSION, OTHER, GID = 54321, 54322, 54000


def made(path: Path, uid: int, mode: int, *, directory: bool = False) -> Path:
    if directory:
        path.mkdir()
    else:
        path.write_text("secret")
    os.chown(path, uid, GID)
    path.chmod(mode)
    return path


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory like /tmp (1777) whose parents every uid may pass (pytest's own tmp_path is root's 0700)."""
    assert os.geteuid() == 0, "the test suite runs as root (Docker, loop mounts); this check needs it too"
    place = Path(tempfile.mkdtemp(prefix="oa-scrub-", dir="/tmp"))
    place.chmod(0o1777)  # anyone creates, only an entry's owner removes it
    try:
        yield place
    finally:
        shutil.rmtree(place, ignore_errors=True)


def test_the_sessions_files_and_directories_go_and_others_stay(scratch: Path) -> None:
    """Its private file, its directory (with a file of another uid inside) and its file inside another uid's
    open directory are removed; the other uid's files and directory stay."""
    mine = made(scratch / "mine", SESSION, 0o600)
    my_dir = made(scratch / "mydir", SESSION, 0o700, directory=True)
    made(my_dir / "deep", SESSION, 0o600)
    made(my_dir / "theirs-inside-mine", OTHER, 0o600)
    shared = made(scratch / "shared", OTHER, 0o777, directory=True)
    mine_in_shared = made(shared / "mine", SESSION, 0o600)
    theirs = made(scratch / "theirs", OTHER, 0o600)
    assert scrub(Ident(SESSION, GID), [str(scratch)])
    assert not mine.exists() and not my_dir.exists() and not mine_in_shared.exists()
    assert theirs.exists() and shared.is_dir()


def test_a_file_it_cannot_remove_keeps_the_uid_out(scratch: Path) -> None:
    """Its file inside another uid's directory that it may no longer write: the scrub says it is not clean
    (the runner then keeps the uid out of the pool) and removes what it can."""
    locked = made(scratch / "locked", OTHER, 0o777, directory=True)
    stuck = made(locked / "mine", SESSION, 0o600)
    locked.chmod(0o755)
    loose = made(scratch / "loose", SESSION, 0o600)
    assert not scrub(Ident(SESSION, GID), [str(scratch)])
    assert stuck.exists() and not loose.exists()


def test_scratch_places_are_the_writable_tmpfs_mounts(tmp_path: Path) -> None:
    """/tmp and /dev/shm always; another writable tmpfs too; read-only ones, /proc, /sys and the workspace not."""
    mounts = tmp_path / "mounts"
    mounts.write_text("tmpfs /run tmpfs rw,nosuid 0 0\ntmpfs /etc/ro tmpfs ro 0 0\n/dev/vda /workspace ext4 rw 0 0\n"
                      "tmpfs /workspace/x tmpfs rw 0 0\nproc /proc proc rw 0 0\n")
    assert scratch_places(str(mounts)) == ["/tmp", "/dev/shm", "/run"]


def test_sysv_objects_are_found_by_owner_or_creator(tmp_path: Path) -> None:
    """/proc/sysvipc's tables are read by their header: an object counts when the uid owns or created it."""
    (tmp_path / "shm").write_text(
        "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid\n"
        "         0          5   600                  4096    10     0      0 54321  1000 54321  1000\n"
        "         0          6   600                  4096    10     0      0 54322  1000 54322  1000\n")
    (tmp_path / "msg").write_text(
        "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid\n"
        "         0          7   600           0          0     0     0 54322  1000 54321  1000\n")
    (tmp_path / "sem").write_text("       key      semid perms      nsems   uid   gid  cuid  cgid\n")
    assert sysv_objects_of(SESSION, str(tmp_path)) == [("shm", 5), ("msg", 7)]
    assert sysv_objects_of(54999, str(tmp_path)) == []


def test_links_are_removed_never_followed(scratch: Path) -> None:
    """A symlink of the uid to a directory of its own elsewhere (as into /workspace) goes; what it points to
    stays. Each step is relative to a held directory, so a swap on the way cannot lead the scrub elsewhere."""
    elsewhere = Path(tempfile.mkdtemp(prefix="oa-scrub-ws-", dir="/tmp"))
    try:
        os.chown(elsewhere, SESSION, GID)
        kept = made(elsewhere / "work", SESSION, 0o600)
        link = scratch / "to-work"
        link.symlink_to(elsewhere)
        os.chown(link, SESSION, GID, follow_symlinks=False)
        assert scrub(Ident(SESSION, GID), [str(scratch)])
        assert not link.is_symlink() and kept.exists()
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_a_directory_of_its_own_with_no_permissions_is_still_removed(scratch: Path) -> None:
    """chmod 000 on its own directory does not keep it (and what is inside) from the scrub."""
    closed = made(scratch / "closed", SESSION, 0o700, directory=True)
    made(closed / "inside", SESSION, 0o600)
    closed.chmod(0)
    assert scrub(Ident(SESSION, GID), [str(scratch)])
    assert not closed.exists()
