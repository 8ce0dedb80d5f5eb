"""Response models of the files API (docs/files.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from server.contract.common import Model, PageMeta

SkipReason = Literal["unsafe_path", "link", "special_file", "setid_stripped", "path_conflict", "symlink_on_path"]


class SkippedEntry(Model):
    name: str = Field(description="The entry's name as the archive gave it.")
    reason: SkipReason = Field(description="unsafe_path (absolute or `..`), link (every link is refused), "
                                           "special_file (device, FIFO, socket), setid_stripped (kept, bits "
                                           "removed), path_conflict / symlink_on_path (the workspace has "
                                           "something else, or a link, on the way).")


class FileUpload(Model):
    """What a `PUT /v1/files/{path}` wrote: one file, or an archive's entries under a directory."""

    path: str
    kind: Literal["file", "archive"]
    bytes: int = Field(ge=0, description="Bytes written (for an archive: of all its files).")
    sha256: str | None = Field(description="SHA-256 of the file written (null for an archive).")
    replaced: bool | None = Field(description="Whether a file of that name was replaced (null for an archive).")
    files: int = Field(ge=0)
    directories: int = Field(ge=0)
    skipped: list[SkippedEntry] = Field(description="Archive entries not written as given, with the reason.")


class FileEntry(Model):
    name: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int = Field(ge=0)
    mode: str = Field(pattern=r"^[0-7]{4}$", description="Permission bits in octal.")
    mtime: str = Field(description="RFC 3339, UTC.")
    sha256: str | None = Field(description="Regular files up to 256 MiB when hashes were asked for; else null.")
    link_target: str | None = Field(description="What a symlink points to (never followed).")


class DirectoryListing(Model):
    path: str
    data: list[FileEntry]
    meta: PageMeta


class FileDeleted(Model):
    path: str
    type: Literal["file", "directory", "symlink", "other"]
