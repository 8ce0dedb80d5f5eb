"""Unpacking a tar or zip archive into a workspace directory, entry by entry, refusing what could escape.

The archive is read from a spool fd (an ``O_TMPFILE`` in the workspace). Before anything is written the
entries are counted and their declared sizes summed against the caps; then each entry goes through the same
fd-relative creation as a single upload. Decisions (docs/files.md): absolute names and ``..`` are skipped;
**every link is refused** (a link that resolves inside now can be re-pointed by a later entry or by the
tenant's code); devices, FIFOs and sockets are skipped; set-id and sticky bits are stripped. Each of these is
listed in the answer with its reason.
"""

from __future__ import annotations

import lzma
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import IO, BinaryIO, Literal

from server.files.errors import FilesError
from server.files.identity import SETID_BITS, Identity
from server.files.safepath import Root
from server.files.write import write_from

Kind = Literal["tar", "zip"]
MAX_ENTRIES = 50_000
# What a corrupt or hostile archive makes the readers raise (a flipped byte in a deflate stream is zlib.error).
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, ValueError,
               NotImplementedError, RuntimeError, OSError, KeyError, struct.error, UnicodeError)
Opener = Callable[[], IO[bytes] | None]


@dataclass(frozen=True)
class Entry:
    """One archive member as the unpacker sees it, whatever the format."""

    name: str
    kind: Literal["file", "dir", "link", "special"]
    size: int
    mode: int


@dataclass
class Unpacked:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)


def _tar_entries(tf: tarfile.TarFile) -> Iterator[tuple[Entry, tarfile.TarInfo]]:
    for m in tf:
        kind: Literal["file", "dir", "link", "special"]
        if m.isreg():
            kind = "file"
        elif m.isdir():
            kind = "dir"
        elif m.issym() or m.islnk():
            kind = "link"
        else:
            kind = "special"
        yield Entry(m.name, kind, m.size if kind == "file" else 0, m.mode), m


def _zip_entry(info: zipfile.ZipInfo) -> Entry:
    mode = (info.external_attr >> 16) & 0xFFFF
    if info.is_dir():
        return Entry(info.filename, "dir", 0, mode & 0o7777 or 0o755)
    if mode and stat.S_ISLNK(mode):
        return Entry(info.filename, "link", 0, 0)
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return Entry(info.filename, "special", 0, 0)
    return Entry(info.filename, "file", info.file_size, mode & 0o7777 or 0o644)


def _safe_parts(name: str) -> list[str] | None:
    """The member's path components, or None when it is absolute, climbs out, or is not a name at all."""
    if not name or name.startswith("/") or "\x00" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." or len(os.fsencode(p)) > 255 for p in parts):
        return None
    return parts


def _too_large(total: int, cap: int) -> FilesError:
    return FilesError("ARCHIVE_TOO_LARGE", f"the archive unpacks to {total} bytes or more, over the policy's "
                                           f"limit of {cap} bytes; nothing was written")


def _check_totals(entries: list[Entry], cap: int) -> None:
    total = sum(e.size for e in entries)
    if total > cap:
        raise _too_large(total, cap)


def unpack(root: Root, base: list[str], spool: BinaryIO, kind: Kind, ident: Identity, cap: int) -> Unpacked:
    """Unpack ``spool`` under the directory ``base`` (made if missing); raises ``FilesError`` before writing
    anything when the archive is unreadable or too large."""
    try:
        if kind == "tar":
            with tarfile.open(fileobj=spool, mode="r:*") as tf:
                members = _take(_tar_entries(tf), cap)
                return _write_all(root, base, [(e, partial(tf.extractfile, m)) for e, m in members],
                                  ident, cap)
        with zipfile.ZipFile(spool) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ENTRIES:
                raise FilesError("ARCHIVE_TOO_LARGE", f"the archive has more than {MAX_ENTRIES} entries")
            pairs = [(_zip_entry(i), partial(zf.open, i)) for i in infos]
            _check_totals([e for e, _ in pairs], cap)
            return _write_all(root, base, pairs, ident, cap)
    except FilesError:
        raise
    except READ_ERRORS as exc:
        raise FilesError("INVALID_ARCHIVE", f"the archive could not be read: {exc}") from None


def _take(entries: Iterator[tuple[Entry, tarfile.TarInfo]], cap: int) -> list[tuple[Entry, tarfile.TarInfo]]:
    """A tar's members, refused as soon as their count or declared total passes the caps: listing a
    compressed tar decompresses every member's data on the way, so a gzip bomb must stop at its first
    oversized header, not after terabytes of zeros."""
    out: list[tuple[Entry, tarfile.TarInfo]] = []
    total = 0
    for pair in entries:
        out.append(pair)
        if len(out) > MAX_ENTRIES:
            raise FilesError("ARCHIVE_TOO_LARGE", f"the archive has more than {MAX_ENTRIES} entries")
        total += pair[0].size
        if total > cap:
            raise _too_large(total, cap)
    return out


def _write_all(root: Root, base: list[str], pairs: Sequence[tuple[Entry, Opener]], ident: Identity,
               cap: int) -> Unpacked:
    done = Unpacked()
    os.close(root.open_dir(base, create=True, mode=ident.dir_mode(), owner=ident.owner))
    for entry, opener in pairs:
        parts = _safe_parts(entry.name)
        if parts is None:
            done.skipped.append((entry.name, "unsafe_path"))
            continue
        if entry.kind == "link":
            done.skipped.append((entry.name, "link"))
            continue
        if entry.kind == "special":
            done.skipped.append((entry.name, "special_file"))
            continue
        if not parts:
            continue  # the archive's own top directory ("./")
        try:
            if entry.kind == "dir":
                os.close(root.open_dir(base + parts, create=True, mode=ident.dir_mode(), owner=ident.owner))
                done.dirs += 1
                continue
            if entry.mode & SETID_BITS:
                done.skipped.append((entry.name, "setid_stripped"))
            source = opener()
            if source is None:
                done.skipped.append((entry.name, "special_file"))
                continue
            with source:
                written = write_from(root, base + parts, source, entry.size, ident, entry.mode,
                                     cap - done.bytes)
            done.files += 1
            done.bytes += written.bytes
        except FilesError as exc:
            if exc.code in ("FILE_TOO_LARGE", "WORKSPACE_FULL"):
                raise FilesError("ARCHIVE_TOO_LARGE" if exc.code == "FILE_TOO_LARGE" else exc.code,
                                 f"{exc.message} (after {done.files} files had been written)") from None
            done.skipped.append((entry.name, "symlink_on_path" if exc.code == "FILE_PATH_HAS_SYMLINK"
                                 else "path_conflict"))
    return done


__all__ = ["Kind", "Unpacked", "unpack"]
