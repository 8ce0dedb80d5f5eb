"""The files API: put a file or an archive into the tenant's workspace, get a file or a directory (tar) out,
list a directory, delete (docs/files.md). Thin: the work is in ``server.files``; this is where its error
codes become statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from server.api.deps import FilesDep
from server.contract.common import PageMeta
from server.contract.files import DirectoryListing, FileDeleted, FileEntry, FileUpload, SkippedEntry
from server.contract.openapi import COMMON, errors
from server.errors import ApiError
from server.files.archive import Kind, unpack
from server.files.errors import FilesError
from server.files.read import file_chunks, tar_stream
from server.files.safepath import parts_of
from server.files.service import Audited
from server.files.tree import delete, list_dir
from server.files.write import write_stream
from server.tenancy import TenantDep

router = APIRouter(tags=["files"], responses=errors(*COMMON, 404, 409, 503, 507))

STATUS = {"INVALID_PATH": 400, "FILE_NOT_FOUND": 404, "FILE_PATH_HAS_SYMLINK": 409, "FILE_PATH_CONFLICT": 409,
          "NOT_A_FILE": 409, "NOT_A_DIRECTORY": 409, "FILE_TOO_LARGE": 413, "ARCHIVE_TOO_LARGE": 413,
          "INVALID_RANGE": 416, "INVALID_ARCHIVE": 422, "WORKSPACE_FULL": 507}
ARCHIVE_TYPES: dict[str, Kind] = {
    "application/x-tar": "tar", "application/tar": "tar", "application/gzip": "tar", "application/x-gzip": "tar",
    "application/x-gtar": "tar", "application/x-compressed-tar": "tar", "application/zip": "zip",
    "application/x-zip-compressed": "zip"}
BINARY = {"schema": {"type": "string", "format": "binary"}}
PATH_DOC_TEXT = "Relative to the workspace; `..` components are refused (400 INVALID_PATH), links are never followed."
PathArg = Annotated[str, PathParam(description=PATH_DOC_TEXT)]
DirArg = Annotated[str, PathParam(description=PATH_DOC_TEXT + " Empty: the workspace itself.")]
RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@contextlib.contextmanager
def _edge() -> Iterator[None]:
    try:
        yield
    except FilesError as exc:
        raise ApiError(exc.code, exc.message, status=STATUS.get(exc.code, 409)) from None


def _kind(unpack_as: Kind | None, content_type: str | None) -> Kind | None:
    if unpack_as is not None:
        return unpack_as
    return ARCHIVE_TYPES.get((content_type or "").split(";", 1)[0].strip().lower())


@router.put("/v1/files/{path:path}", responses={
    **errors(413, 416, 422)}, openapi_extra={"requestBody": {"required": False, "content": {
        "application/octet-stream": BINARY, "application/x-tar": BINARY, "application/gzip": BINARY,
        "application/zip": BINARY}}})
async def put_file(path: PathArg, tenant: TenantDep, files: FilesDep, request: Request,
                   unpack_as: Annotated[Kind | None, Query(alias="unpack", description=(
                       "Unpack the body as this archive type into the directory `path` (also chosen by a tar, "
                       "gzip or zip Content-Type)."))] = None) -> FileUpload:
    """Write the raw body as the file `path` (streamed, size-capped by the policy, replaced atomically), or
    unpack an archive under the directory `path`; archive entries not written as given are listed."""
    kind = _kind(unpack_as, request.headers.get("content-type"))
    with _edge():
        async with files.audited(tenant.id, "put", {"path": path, "unpack": kind}) as rec:
            parts = parts_of(path)
            root, ident = await files.open(tenant.id)
            with root:
                cap = files.policy_for(tenant.id).files_max_bytes
                if kind is None:
                    w = await write_stream(root, parts, request.stream(), ident, cap)
                    rec.summary = {"bytes": w.bytes, "sha256": w.sha256, "replaced": w.replaced}
                    return FileUpload(path="/".join(parts), kind="file", bytes=w.bytes, sha256=w.sha256,
                                      replaced=w.replaced, files=1, directories=0, skipped=[])
                spool = os.fdopen(os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=root.fd),
                                  "w+b")
                with spool:
                    size, digest = 0, hashlib.sha256()
                    async for chunk in request.stream():
                        size += len(chunk)
                        if size > cap:
                            raise FilesError("ARCHIVE_TOO_LARGE", f"the archive is larger than the policy's "
                                                                  f"limit of {cap} bytes")
                        digest.update(chunk)
                        spool.write(chunk)
                    spool.flush()
                    spool.seek(0)
                    done = await asyncio.to_thread(unpack, root, parts, spool, kind, ident, cap)
                skipped = [SkippedEntry.model_validate({"name": n, "reason": r}) for n, r in done.skipped]
                rec.summary = {"archive_bytes": size, "archive_sha256": digest.hexdigest(), "files": done.files,
                               "directories": done.dirs, "bytes": done.bytes, "skipped": done.skipped}
                return FileUpload(path="/".join(parts), kind="archive", bytes=done.bytes, sha256=None,
                                  replaced=None, files=done.files, directories=done.dirs, skipped=skipped)


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single ``bytes=`` range; None to send it all; ``INVALID_RANGE`` (416) when
    the range lies outside the file."""
    m = None if header is None else RANGE.fullmatch(header.strip())
    if m is None or m.groups() == ("", ""):
        return None  # none, several, or not one we read: the whole file (RFC 9110 lets a server ignore Range)
    first, last = m.groups()
    if first == "":
        start, end = max(0, size - int(last)), size
    else:
        start, end = int(first), size if last == "" else min(size, int(last) + 1)
    if start >= end:
        raise FilesError("INVALID_RANGE", f"the range is outside the file's {size} bytes")
    return start, end


async def _stream(stack: AsyncExitStack, rec: Audited, chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks, counted and hashed into the audit record written when the stream ends (or is cut)."""
    sent, digest = 0, hashlib.sha256()
    try:
        async for chunk in iterate_in_threadpool(chunks):
            sent += len(chunk)
            digest.update(chunk)
            yield chunk
        rec.summary.update(bytes=sent, sha256=digest.hexdigest())
    except BaseException:
        rec.summary.update(bytes=sent, complete=False)
        rec.error = rec.error or ("CANCELLED", "the client went away before the end of the stream")
        raise
    finally:
        await stack.aclose()


@router.get("/v1/files/{path:path}", response_model=None, responses={
    200: {"model": DirectoryListing, "description": "The file's bytes (`application/octet-stream`), a directory "
          "as `application/x-tar`, or with `list=true` a directory listing.",
          "content": {"application/octet-stream": BINARY, "application/x-tar": BINARY}},
    206: {"description": "The asked range of the file.", "content": {"application/octet-stream": BINARY}},
    **errors(416)})
async def get_file(path: DirArg, tenant: TenantDep, files: FilesDep, request: Request,
                   list_: Annotated[bool, Query(alias="list", description="List the directory instead.")] = False,
                   page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
                   per_page: Annotated[int, Query(ge=1, le=1000)] = 100,
                   hashes: Annotated[bool, Query(alias="hash", description="SHA-256 of listed files.")] = True,
                   range_: Annotated[str | None, Header(alias="Range", max_length=200)] = None,
                   ) -> JSONResponse | StreamingResponse:
    """A file (streamed; a single `Range` is answered with 206), a directory as a tar stream, or a listing."""
    stack = AsyncExitStack()
    with _edge():
        try:
            rec = await stack.enter_async_context(files.audited(tenant.id, "list" if list_ else "get",
                                                                {"path": path, "range": range_}))
            parts = parts_of(path)
            root, _ = await files.open(tenant.id)
            stack.callback(root.close)
            if list_:
                total, items = await asyncio.to_thread(list_dir, root, parts, page, per_page, hashes)
                rec.summary = {"total": total, "page": page, "entries": len(items)}
                listing = DirectoryListing(path="/".join(parts), meta=PageMeta.of(page, per_page, total),
                                           data=[FileEntry.model_validate(vars(i)) for i in items])
                await stack.aclose()
                return JSONResponse(listing.model_dump(mode="json"))
            st = await asyncio.to_thread(root.lstat, parts)
            if stat.S_ISDIR(st.st_mode):
                dirfd = await asyncio.to_thread(root.open_dir, parts)
                stack.callback(os.close, dirfd)
                rec.summary["kind"] = "directory"
                name = (parts[-1] if parts else "workspace") + ".tar"
                return StreamingResponse(_stream(stack, rec, tar_stream(dirfd)), media_type="application/x-tar",
                                         headers={"Content-Disposition": _disposition(name)})
            fd, fst = await asyncio.to_thread(root.open_file, parts)
            stack.callback(os.close, fd)
            span = _range(range_, fst.st_size)
            start, end = span or (0, fst.st_size)
            headers = {"Content-Length": str(end - start), "Accept-Ranges": "bytes",
                       "Content-Disposition": _disposition(parts[-1])}
            if span is not None:
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{fst.st_size}"
            rec.summary.update(kind="file", size=fst.st_size, start=start, end=end)
            return StreamingResponse(_stream(stack, rec, file_chunks(fd, start, end)),
                                     status_code=206 if span else 200, media_type="application/octet-stream",
                                     headers=headers)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise


def _disposition(name: str) -> str:
    return f"attachment; filename*=UTF-8''{quote(name, safe='')}"


@router.delete("/v1/files/{path:path}")
async def delete_file(path: PathArg, tenant: TenantDep, files: FilesDep) -> FileDeleted:
    """Delete a file, a link (never its target) or a directory with everything in it."""
    with _edge():
        async with files.audited(tenant.id, "delete", {"path": path}) as rec:
            parts = parts_of(path)
            root, _ = await files.open(tenant.id)
            with root:
                kind: Any = await asyncio.to_thread(delete, root, parts)
            rec.summary = {"type": kind}
            return FileDeleted(path="/".join(parts), type=kind)


__all__ = ["router"]
