"""Reading skill directories from the host side without trusting them.

A tenant's skills live in its workspace, which the tenant's tools write: any part of the path may be a
symlink to somewhere on the host, a FIFO, or a file of gigabytes. So every step is an ``openat`` relative to
the directory before it with ``O_NOFOLLOW`` (a symlink anywhere is refused, never followed), files are opened
``O_NONBLOCK`` and read only if ``fstat`` says they are regular and small, and every count is capped. The
server's own directories are the operator's and are read the same way, their configured path aside.

A scan reports each ``SKILL.md`` by identity (device, inode, size, mtime, ctime), so the catalog re-parses
only what changed: that snapshot is what makes an edit take effect at the next request, without a restart.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SKILL_FILE = "SKILL.md"
MAX_SKILL_BYTES = 256 * 1024
MAX_SKILLS_PER_SOURCE = 256
MAX_FILES_LISTED = 64
MAX_ENTRIES_SCANNED = 4096

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

Key = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class Found:
    """One skill directory: its SKILL.md's identity and text, or why it could not be read."""

    directory: str
    key: Key | None
    text: str | None = None
    error: str | None = None
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scan:
    found: list[Found]
    problems: list[str]  # about the source itself (too many skills, not a directory…)
    present: bool  # False: the skills directory does not exist (nothing to report)


class Unreadable(Exception):
    """A path step that is a symlink, not a directory, or gone."""


@contextmanager
def _opened(name: str, dir_fd: int | None, flags: int) -> Iterator[int]:
    fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_dir(name: str, dir_fd: int) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        # Linux answers ENOTDIR for a symlink opened O_DIRECTORY | O_NOFOLLOW: say which it was.
        link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        raise Unreadable(f"{name} is a symbolic link, which is not followed" if link
                         else f"{name} is not a directory") from None


def _read_skill_file(dir_fd: int) -> tuple[Key, str]:
    try:
        fd = os.open(SKILL_FILE, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unreadable(f"{SKILL_FILE} is a symbolic link, which is not followed") from None
        if exc.errno == errno.ENOENT:
            raise Unreadable(f"no {SKILL_FILE} in the directory") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable(f"{SKILL_FILE} is not a regular file")
        key: Key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if st.st_size > MAX_SKILL_BYTES:
            raise Unreadable(f"{SKILL_FILE} is {st.st_size} bytes; at most {MAX_SKILL_BYTES}")
        data = os.read(fd, MAX_SKILL_BYTES + 1)
        if len(data) > MAX_SKILL_BYTES:
            raise Unreadable(f"{SKILL_FILE} grew past {MAX_SKILL_BYTES} bytes while read")
    finally:
        os.close(fd)
    try:
        return key, data.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable(f"{SKILL_FILE} is not UTF-8 text") from None


def _identity(dir_fd: int) -> Key | None:
    try:
        st = os.stat(SKILL_FILE, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _files(dir_fd: int) -> list[str]:
    """The skill's other files, two levels deep, symlinks and special files left out, at most a few dozen."""
    out: list[str] = []
    with os.scandir(dir_fd) as top:
        entries = sorted(top, key=lambda e: e.name)[:MAX_FILES_LISTED]
    for entry in entries:
        if len(out) >= MAX_FILES_LISTED:
            break
        if entry.is_file(follow_symlinks=False) and entry.name != SKILL_FILE:
            out.append(entry.name)
        elif entry.is_dir(follow_symlinks=False):
            try:
                with _opened(entry.name, dir_fd, _DIR_FLAGS) as sub, os.scandir(sub) as inner:
                    names = sorted(e.name for e in inner if e.is_file(follow_symlinks=False))
            except OSError:
                continue
            out.extend(f"{entry.name}/{n}" for n in names[: MAX_FILES_LISTED - len(out)])
    return out


def _one(dir_fd: int, name: str, previous: Found | None) -> Found:
    try:
        fd = _open_dir(name, dir_fd)
    except Unreadable as exc:
        return Found(name, None, error=str(exc))
    except OSError as exc:  # gone meanwhile, no permission: this skill's problem, not the request's
        return Found(name, None, error=f"cannot open it: {exc.strerror}")
    try:
        key = _identity(fd)
        if previous is not None and key is not None and previous.key == key:
            return Found(name, key, previous.text, previous.error, _files(fd))  # unchanged: not read again
        key, text = _read_skill_file(fd)
        return Found(name, key, text=text, files=_files(fd))
    except Unreadable as exc:
        return Found(name, _identity(fd), error=str(exc))
    except OSError as exc:
        return Found(name, None, error=f"cannot read it: {exc.strerror}")
    finally:
        os.close(fd)


def _entries(fd: int, problems: list[str]) -> list[str]:
    """The names of the candidate skill directories (links included, to be reported), sorted, capped."""
    names: list[str] = []
    with os.scandir(fd) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_ENTRIES_SCANNED:
                problems.append(f"more than {MAX_ENTRIES_SCANNED} entries; the rest are not read")
                break
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False) or entry.is_symlink():
                names.append(entry.name)
    return sorted(names)


def scan(base: Path, relative: tuple[str, ...], previous: dict[str, Found]) -> Scan:
    """Each skill directory under ``base``/``relative`` (the steps below ``base`` never followed if links).

    ``base`` itself is trusted (the server's configured directory, or the data directory's workspace path);
    ``previous`` maps directory names to the last scan's results so unchanged files are not read again."""
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return Scan([], [], present=False)
    except OSError as exc:
        return Scan([], [f"cannot open the skills directory: {exc.strerror}"], present=True)
    try:
        for step in relative:
            try:
                inner = _open_dir(step, fd)
            except FileNotFoundError:
                return Scan([], [], present=False)
            except (Unreadable, OSError) as exc:
                return Scan([], [f"skills directory unreadable: {exc}"], present=True)
            os.close(fd)
            fd = inner
        problems: list[str] = []
        try:
            names = _entries(fd, problems)
        except OSError as exc:
            return Scan([], [f"cannot list the skills directory: {exc.strerror}"], present=True)
        if len(names) > MAX_SKILLS_PER_SOURCE:
            problems.append(f"{len(names)} skill directories; only the first {MAX_SKILLS_PER_SOURCE} by name "
                            "are read")
            names = names[:MAX_SKILLS_PER_SOURCE]
        return Scan([_one(fd, name, previous.get(name)) for name in names], problems, present=True)
    finally:
        os.close(fd)


MAX_BUNDLE_FILE_BYTES = 256 * 1024
MAX_BUNDLE_BYTES = 1024 * 1024


def _read_text(parent: int, name: str) -> str:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise Unreadable("a symbolic link, not followed" if exc.errno == errno.ELOOP else exc.strerror) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable("not a regular file")
        if st.st_size > MAX_BUNDLE_FILE_BYTES:
            raise Unreadable(f"{st.st_size} bytes; at most {MAX_BUNDLE_FILE_BYTES}")
        data = os.read(fd, MAX_BUNDLE_FILE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("not UTF-8 text (only text files are copied)") from None


def read_bundle(base: Path, directory: str, files: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """The text of a server skill's files (``files`` as a scan listed them), to copy into a sandbox.

    Returns ``(path, text)`` pairs and, for the files left out, ``"path: reason"`` lines (binary, too large,
    a link, over the bundle's total)."""
    texts: list[tuple[str, str]] = []
    skipped: list[str] = []
    total = 0
    with (_opened(str(base), None, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) as root,
          _opened(directory, root, _DIR_FLAGS) as skill):
        for rel in files:
            parts = rel.split("/")
            try:
                if len(parts) == 1:
                    text = _read_text(skill, parts[0])
                else:
                    with _opened(parts[0], skill, _DIR_FLAGS) as sub:
                        text = _read_text(sub, parts[1])
            except (Unreadable, OSError) as exc:
                skipped.append(f"{rel}: {exc}")
                continue
            size = len(text.encode())
            if total + size > MAX_BUNDLE_BYTES:
                skipped.append(f"{rel}: the skill's files would pass {MAX_BUNDLE_BYTES} bytes in all")
                continue
            total += size
            texts.append((rel, text))
    return texts, skipped
