"""File tools: read_file, write_file, edit_file, notebook_edit.

Every open goes through a directory fd from ``paths.Workspace.resolve`` with O_NOFOLLOW; writes refuse a
regular file with more than one hard link, whose other name may lie outside the workspace.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import uuid
from collections.abc import Iterator
from typing import Any

from toolrunner.runner.context import Call, ToolFailure, check_fields, opt_bool, opt_int, require_str
from toolrunner.runner.paths import Target, Workspace, outside
from toolrunner.runner.state import Session

DEFAULT_LINES = 2000
MAX_LINE = 2000
READ_LINE = 64 * 1024  # a minified file may be one line of megabytes: never hold more than this of one line
MAX_EDIT_BYTES = 16 * 1024 * 1024
SNIFF = 8192


def _open(t: Target, flags: int, *, write: bool) -> int:
    try:
        fd = os.open(t.name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666, dir_fd=t.dir_fd)
    except FileNotFoundError:
        raise ToolFailure("FILE_NOT_FOUND", f"{t.rel!r} does not exist") from None
    except IsADirectoryError:
        raise ToolFailure("IS_A_DIRECTORY", f"{t.rel!r} is a directory") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise outside(t.rel, "became a symlink while being opened") from None
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ToolFailure("RESOURCE_LIMIT", f"{t.rel!r}: {exc.strerror} (disk limit)") from None
        raise ToolFailure("INVALID_INPUT", f"{t.rel!r}: {exc.strerror}") from None
    st = os.fstat(fd)
    problem = None
    if stat.S_ISDIR(st.st_mode):
        problem = ToolFailure("IS_A_DIRECTORY", f"{t.rel!r} is a directory")
    elif not stat.S_ISREG(st.st_mode):
        problem = ToolFailure("INVALID_INPUT", f"{t.rel!r} is not a regular file")
    elif write and st.st_nlink > 1:
        problem = outside(t.rel, f"has {st.st_nlink} hard links (another name may be outside the workspace)")
    if problem is not None:
        os.close(fd)
        raise problem
    os.set_blocking(fd, True)
    return fd


def _read_all(fd: int, rel: str) -> bytes:
    size = os.fstat(fd).st_size
    if size > MAX_EDIT_BYTES:
        raise ToolFailure("FILE_TOO_LARGE", f"{rel!r} has {size} bytes; at most {MAX_EDIT_BYTES} can be edited")
    chunks = []
    while True:
        data = os.read(fd, 1 << 20)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes, call: Call, rel: str) -> None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            call.limit = "disk"
            raise ToolFailure("RESOURCE_LIMIT", f"{rel!r}: {exc.strerror} (disk limit)") from None
        raise ToolFailure("INVALID_INPUT", f"{rel!r}: {exc.strerror}") from None


def _text(data: bytes, rel: str) -> str:
    if b"\0" in data[:SNIFF]:
        raise ToolFailure("BINARY_FILE", f"{rel!r} looks binary (it contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolFailure("BINARY_FILE", f"{rel!r} is not UTF-8 text") from None


def _lines(f: io.BufferedReader) -> Iterator[tuple[bytes, int]]:
    """Lines with at most READ_LINE bytes kept each, and how many more bytes that line had (never held)."""
    while True:
        line = f.readline(READ_LINE)
        if not line:
            return
        rest = 0
        if len(line) == READ_LINE and not line.endswith(b"\n"):
            while more := f.readline(READ_LINE):
                rest += len(more)
                if more.endswith(b"\n"):
                    break
        yield line, rest


def read_file(ws: Workspace, session: Session, call: Call) -> None:
    check_fields(call.input, {"path", "offset", "limit"})
    path = require_str(call.input, "path", allow_empty=False)
    offset = opt_int(call.input, "offset") or 0
    limit = opt_int(call.input, "limit", minimum=1) or DEFAULT_LINES
    with ws.resolve(path) as t, os.fdopen(_open(t, os.O_RDONLY, write=False), "rb") as f:
        if b"\0" in f.peek(SNIFF)[:SNIFF]:
            raise ToolFailure("BINARY_FILE", f"{t.rel!r} looks binary (it contains NUL bytes); not shown")
        cap, used, shown, n = call.output.cap, 0, 0, 0
        out: list[str] = []
        for n, (raw, rest) in enumerate(_lines(f), start=1):
            if n <= offset:
                continue
            if shown >= limit:
                call.note = f"[more lines follow; continue with offset={n - 1}]"
                break
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) > MAX_LINE or rest:
                line = line[:MAX_LINE] + f"... [line cut: {len(raw) + rest} bytes]"
            text = f"{n:6}\t{line}\n"
            used += len(text.encode())
            if used > cap:
                call.truncated, call.limit = True, "output"
                call.note = f"[output cap reached; continue with offset={n - 1}]"
                break
            out.append(text)
            shown += 1
        if not out and offset and n <= offset:
            call.note = f"[the file has {n} lines; offset {offset} is past the end]"
        call.output.add("".join(out).encode())
        call.exit_code = 0


def write_file(ws: Workspace, session: Session, call: Call) -> None:
    check_fields(call.input, {"path", "content"})
    path = require_str(call.input, "path", allow_empty=False)
    content = require_str(call.input, "content").encode("utf-8", "surrogatepass")
    with ws.resolve(path, create_dirs=True) as t:
        if t.name == ".":
            raise ToolFailure("IS_A_DIRECTORY", f"{path!r} is a directory")
        existed = t.exists
        fd = _open(t, os.O_WRONLY | os.O_CREAT, write=True)
        try:
            _write_all(fd, content, call, t.rel)
        finally:
            os.close(fd)
    call.exit_code = 0
    verb = "overwrote" if existed else "created"
    call.output.add(f"{verb} {t.rel} ({len(content)} bytes)".encode())


def edit_file(ws: Workspace, session: Session, call: Call) -> None:
    check_fields(call.input, {"path", "old_string", "new_string", "replace_all"})
    path = require_str(call.input, "path", allow_empty=False)
    old = require_str(call.input, "old_string", allow_empty=False)
    new = require_str(call.input, "new_string")
    replace_all = opt_bool(call.input, "replace_all")
    if old == new:
        raise ToolFailure("INVALID_INPUT", "old_string and new_string are the same")
    with ws.resolve(path) as t:
        fd = _open(t, os.O_RDWR, write=True)
        try:
            text = _text(_read_all(fd, t.rel), t.rel)
            count = text.count(old)
            if count == 0:
                raise ToolFailure("NO_MATCH", f"old_string was not found in {t.rel}")
            if count > 1 and not replace_all:
                raise ToolFailure(
                    "MULTIPLE_MATCHES",
                    f"old_string occurs {count} times in {t.rel}; give more "
                    "context to make it unique, or set replace_all",
                )
            text = text.replace(old, new) if replace_all else text.replace(old, new, 1)
            _write_all(fd, text.encode("utf-8", "surrogatepass"), call, t.rel)
        finally:
            os.close(fd)
    call.exit_code = 0
    call.output.add(f"replaced {count if replace_all else 1} occurrence(s) in {t.rel}".encode())


def _cell(cell_type: str, source: str, with_id: bool) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "cell_type": cell_type,
        "metadata": {},
        "source": source.splitlines(keepends=True),
    }
    if cell_type == "code":
        cell.update(outputs=[], execution_count=None)
    if with_id:
        cell["id"] = uuid.uuid4().hex[:8]
    return cell


def notebook_edit(ws: Workspace, session: Session, call: Call) -> None:
    check_fields(call.input, {"path", "cell_index", "new_source", "edit_mode", "cell_type"})
    path = require_str(call.input, "path", allow_empty=False)
    index = opt_int(call.input, "cell_index")
    if index is None:
        raise ToolFailure("INVALID_INPUT", "field 'cell_index' is required")
    source = require_str(call.input, "new_source", optional=True) or ""
    mode = require_str(call.input, "edit_mode", optional=True) or "replace"
    cell_type = require_str(call.input, "cell_type", optional=True)
    if mode not in ("replace", "insert", "delete"):
        raise ToolFailure("INVALID_INPUT", "field 'edit_mode' must be replace, insert or delete")
    if cell_type not in (None, "code", "markdown"):
        raise ToolFailure("INVALID_INPUT", "field 'cell_type' must be code or markdown")
    with ws.resolve(path) as t:
        fd = _open(t, os.O_RDWR, write=True)
        try:
            try:
                nb = json.loads(_text(_read_all(fd, t.rel), t.rel))
                cells = nb["cells"]
                assert isinstance(cells, list)
            except (ValueError, KeyError, TypeError, AssertionError):
                raise ToolFailure("INVALID_INPUT", f"{t.rel!r} is not a Jupyter notebook (no cell list)") from None
            with_id = (nb.get("nbformat"), nb.get("nbformat_minor", 0)) >= (4, 5)
            size = len(cells)
            if index > size or (mode != "insert" and index == size):
                raise ToolFailure("INVALID_INPUT", f"cell_index {index} is out of range: the notebook has {size} cells")
            if mode == "delete":
                del cells[index]
            elif mode == "insert":
                cells.insert(index, _cell(cell_type or "code", source, with_id))
            else:
                old = cells[index]
                new = _cell(cell_type or old.get("cell_type", "code"), source, False)
                if "id" in old:
                    new["id"] = old["id"]
                new["metadata"] = old.get("metadata", {})
                cells[index] = new
            data = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
            _write_all(fd, data.encode("utf-8"), call, t.rel)
        finally:
            os.close(fd)
    call.exit_code = 0
    done = {"replace": "replaced", "insert": "inserted", "delete": "deleted"}[mode]
    call.output.add(f"{done} cell {index} of {t.rel}; the notebook now has {len(cells)} cells".encode())
