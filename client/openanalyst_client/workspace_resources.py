"""The tenant's workspace files and its environments, blocking (``FilesApi``…) and asyncio (``AsyncFilesApi``…)
side by side, sending the same requests and returning the same models.

Uploads stream from a file or an iterable of bytes and downloads stream to a file, so neither side holds a
large file in memory; ``read`` returns bytes for small files.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import quote

import httpx

from openanalyst_client import _requests as rq
from openanalyst_client._async_http import AsyncEventStream, AsyncHttp
from openanalyst_client._sync_http import EventStream, SyncHttp
from openanalyst_client.workspace_models import (
    DefaultEnvironment,
    DirectoryListing,
    Environment,
    EnvironmentList,
    FileDeleted,
    FileUpload,
)

ArchiveKind = Literal["tar", "tar.gz", "zip"]
ARCHIVE_TYPES: dict[str, str] = {"tar": "application/x-tar", "tar.gz": "application/gzip", "zip": "application/zip"}
CHUNK = 256 * 1024
Body = bytes | BinaryIO | Path | Iterable[bytes]


def files_path(path: str) -> str:
    """``/v1/files/<path>``, each segment quoted (the slashes between them kept)."""
    return "/v1/files/" + quote(path.strip("/"), safe="/")


def _env_path(name: str, *rest: str) -> str:
    return "/".join(("/v1/environments", quote(name, safe=""), *rest))


class _FileChunks:
    """A local file's bytes, read as they are sent, and again from the start if the request is retried."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            yield from iter(lambda: handle.read(CHUNK), b"")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self:
            yield piece


def _one_shot(body: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    if hasattr(body, "read"):
        yield from iter(lambda: body.read(CHUNK), b"")
    else:
        yield from body


async def _one_shot_async(body: BinaryIO | Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in _one_shot(body):
        yield piece


def _content(body: Body) -> bytes | Iterable[bytes]:
    """What httpx sends. Bytes and local paths can be sent again when a 429/503 is retried; an open file or
    an iterator cannot, and httpx then raises ``StreamConsumed`` rather than upload an empty body."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, Path):
        return _FileChunks(body)
    return _one_shot(body)


def _acontent(body: Body) -> bytes | AsyncIterator[bytes] | _FileChunks:
    if isinstance(body, bytes):
        return body
    if isinstance(body, Path):
        return _FileChunks(body)
    return _one_shot_async(body)


def _archive_headers(kind: ArchiveKind) -> dict[str, str]:
    return {"Content-Type": ARCHIVE_TYPES[kind]}


class FilesApi:
    """``PUT``/``GET``/``DELETE /v1/files/{path}``: the tenant's workspace, binary-safe."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def write(self, path: str, body: Body) -> FileUpload:
        """Write (or replace) the file ``path`` with ``body``: bytes, a binary file, a local path or chunks."""
        headers = {"Content-Type": "application/octet-stream"}
        return FileUpload.model_validate(self._http.json("PUT", files_path(path), content=_content(body),
                                                         headers=headers))

    def unpack(self, path: str, archive: Body, kind: ArchiveKind = "tar") -> FileUpload:
        """Unpack a tar (``tar.gz``) or zip archive under the directory ``path``; refused entries are listed
        in ``skipped``."""
        return FileUpload.model_validate(self._http.json("PUT", files_path(path), content=_content(archive),
                                                         headers=_archive_headers(kind)))

    def read(self, path: str) -> bytes:
        """A (small) file's bytes."""
        return self._http.request("GET", files_path(path)).content

    def download(self, path: str, target: str | Path) -> Path:
        """A file, or a directory as a tar archive, streamed into ``target`` (written whole or not at all)."""
        return self._http.save(target, f"download of {path}", "GET", files_path(path))

    def list(self, path: str = "", *, page: int = 1, per_page: int = 100, hashes: bool = True) -> DirectoryListing:
        params: dict[str, Any] = {"list": "true", "page": page, "per_page": per_page, "hash": str(hashes).lower()}
        return DirectoryListing.model_validate(self._http.json("GET", files_path(path), params=params))

    def delete(self, path: str) -> FileDeleted:
        return FileDeleted.model_validate(self._http.json("DELETE", files_path(path)))


class EnvironmentsApi:
    """The tenant's environments: packages on top of the sandbox image, built in the background."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def create(self, name: str, *, debian: Iterable[str] = (), python: Iterable[str] = (), npm: Iterable[str] = (),
               dockerfile: str = "") -> Environment:
        body = {"name": name, "debian": [*debian], "python": [*python], "npm": [*npm], "dockerfile": dockerfile}
        return Environment.model_validate(self._http.json("POST", "/v1/environments", json=body))

    def get(self, name: str) -> Environment:
        return Environment.model_validate(self._http.json("GET", _env_path(name)))

    def list(self) -> EnvironmentList:
        return EnvironmentList.model_validate(self._http.json("GET", "/v1/environments"))

    def delete(self, name: str) -> None:
        self._http.request("DELETE", _env_path(name))

    def default(self) -> DefaultEnvironment:
        return DefaultEnvironment.model_validate(self._http.json("GET", "/v1/environments/default"))

    def set_default(self, name: str | None) -> DefaultEnvironment:
        return DefaultEnvironment.model_validate(self._http.json("PUT", "/v1/environments/default",
                                                                 json={"environment": name}))

    def build_events(self, name: str) -> EventStream:
        """The build's progress lines, then ``environment_build_done`` (ready or failed)."""
        def opener(_: int | None) -> contextlib.AbstractContextManager[httpx.Response]:
            return self._http.open("GET", _env_path(name, "build", "events"), headers=rq.SSE)
        return EventStream(self._http, opener)


class AsyncFilesApi:
    """``FilesApi`` for ``AsyncClient``."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def write(self, path: str, body: Body) -> FileUpload:
        headers = {"Content-Type": "application/octet-stream"}
        return FileUpload.model_validate(await self._http.json("PUT", files_path(path), content=_acontent(body),
                                                               headers=headers))

    async def unpack(self, path: str, archive: Body, kind: ArchiveKind = "tar") -> FileUpload:
        return FileUpload.model_validate(await self._http.json("PUT", files_path(path), content=_acontent(archive),
                                                               headers=_archive_headers(kind)))

    async def read(self, path: str) -> bytes:
        return (await self._http.request("GET", files_path(path))).content

    async def download(self, path: str, target: str | Path) -> Path:
        return await self._http.save(target, f"download of {path}", "GET", files_path(path))

    async def list(self, path: str = "", *, page: int = 1, per_page: int = 100,
                   hashes: bool = True) -> DirectoryListing:
        params: dict[str, Any] = {"list": "true", "page": page, "per_page": per_page, "hash": str(hashes).lower()}
        return DirectoryListing.model_validate(await self._http.json("GET", files_path(path), params=params))

    async def delete(self, path: str) -> FileDeleted:
        return FileDeleted.model_validate(await self._http.json("DELETE", files_path(path)))


class AsyncEnvironmentsApi:
    """``EnvironmentsApi`` for ``AsyncClient``."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def create(self, name: str, *, debian: Iterable[str] = (), python: Iterable[str] = (),
                     npm: Iterable[str] = (), dockerfile: str = "") -> Environment:
        body = {"name": name, "debian": [*debian], "python": [*python], "npm": [*npm], "dockerfile": dockerfile}
        return Environment.model_validate(await self._http.json("POST", "/v1/environments", json=body))

    async def get(self, name: str) -> Environment:
        return Environment.model_validate(await self._http.json("GET", _env_path(name)))

    async def list(self) -> EnvironmentList:
        return EnvironmentList.model_validate(await self._http.json("GET", "/v1/environments"))

    async def delete(self, name: str) -> None:
        await self._http.request("DELETE", _env_path(name))

    async def default(self) -> DefaultEnvironment:
        return DefaultEnvironment.model_validate(await self._http.json("GET", "/v1/environments/default"))

    async def set_default(self, name: str | None) -> DefaultEnvironment:
        return DefaultEnvironment.model_validate(await self._http.json("PUT", "/v1/environments/default",
                                                                       json={"environment": name}))

    def build_events(self, name: str) -> AsyncEventStream:
        def opener(_: int | None) -> contextlib.AbstractAsyncContextManager[httpx.Response]:
            return self._http.open("GET", _env_path(name, "build", "events"), headers=rq.SSE)
        return AsyncEventStream(self._http, opener)
