"""Typed results of the files and environments routes, mirroring the server's OpenAPI schemas of the same
names (``tests/client/test_client_contract.py`` checks them field for field)."""

from __future__ import annotations

from typing import Literal

from openanalyst_client.models import Model, PageMeta


class SkippedEntry(Model):
    name: str
    reason: Literal["unsafe_path", "link", "special_file", "setid_stripped", "path_conflict", "symlink_on_path"]


class FileUpload(Model):
    path: str
    kind: Literal["file", "archive"]
    bytes: int
    sha256: str | None
    replaced: bool | None
    files: int
    directories: int
    skipped: list[SkippedEntry]


class FileEntry(Model):
    name: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int
    mode: str
    mtime: str
    sha256: str | None
    link_target: str | None


class DirectoryListing(Model):
    path: str
    data: list[FileEntry]
    meta: PageMeta


class FileDeleted(Model):
    path: str
    type: Literal["file", "directory", "symlink", "other"]


class Environment(Model):
    name: str
    debian: list[str]
    python: list[str]
    npm: list[str]
    dockerfile: str
    state: Literal["building", "ready", "failed"]
    image: str | None
    hash: str | None
    error: str | None
    error_code: str | None
    default: bool
    created_at: str


class EnvironmentList(Model):
    data: list[Environment]


class DefaultEnvironment(Model):
    environment: str | None
