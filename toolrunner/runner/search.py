"""Search tools: grep_search (ripgrep when the image has it, else a pure-Python walk) and glob_search.

Neither follows symlinks while walking: ripgrep runs without -L, and the Python walks use
``os.walk(followlinks=False)`` and skip symlinked files.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from collections.abc import Iterator

from toolrunner.runner.context import Call, ToolFailure, check_fields, opt_bool, require_str
from toolrunner.runner.execute import run
from toolrunner.runner.paths import Workspace, outside
from toolrunner.runner.state import Session

MAX_FILES = 1000
MAX_GREP_FILE = 32 * 1024 * 1024  # the fallback reads whole files; rg (in the image) has no such limit
SNIFF = 8192
MODES = ("content", "files_with_matches", "count")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob (`*`, `?`, `**`, `[...]`, `{a,b}`) into a regex over '/'-separated paths."""
    return re.compile("(?s:" + _translate(pattern) + r")\Z")


def _translate(pat: str) -> str:
    out, i, n = [], 0, len(pat)
    while i < n:
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pat.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (j := pat.find("]", i + 2)) != -1:
            body = pat[i + 1 : j].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = j
        elif c == "{" and (j := pat.find("}", i)) != -1:
            out.append("(?:" + "|".join(_translate(alt) for alt in pat[i + 1 : j].split(",")) + ")")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _walk(ws: Workspace, rel: str, call: Call, *, hidden: bool) -> Iterator[tuple[str, os.stat_result]]:
    """(workspace-relative path, lstat) of every non-directory entry under `rel`, links not followed."""
    top = ws.real(rel)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        if time.perf_counter() > call.deadline or call.cancelled.is_set():
            call.timed_out = not call.cancelled.is_set()
            call.limit = "timeout" if call.timed_out else None
            return
        if not hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirnames.sort()
        for name in sorted(filenames):
            if not hidden and name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            yield os.path.relpath(full, ws.root), st


def _dir(ws: Workspace, path: str | None) -> str:
    """The workspace-relative directory or file to search, checked to lie inside the workspace."""
    with ws.resolve(path or ".") as t:
        if not t.exists:
            raise ToolFailure("FILE_NOT_FOUND", f"{path!r} does not exist")
        return t.rel


def grep_search(ws: Workspace, session: Session, call: Call) -> None:
    check_fields(call.input, {"pattern", "path", "glob", "output_mode", "case_insensitive"})
    pattern = require_str(call.input, "pattern", allow_empty=False)
    glob = require_str(call.input, "glob", optional=True)
    mode = require_str(call.input, "output_mode", optional=True) or "files_with_matches"
    if mode not in MODES:
        raise ToolFailure("INVALID_INPUT", f"field 'output_mode' must be one of {', '.join(MODES)}")
    icase = opt_bool(call.input, "case_insensitive")
    for name, value in (("pattern", pattern), ("glob", glob or "")):
        if "\0" in value:
            raise ToolFailure("INVALID_INPUT", f"field {name!r} contains a NUL byte")
    rel = _dir(ws, require_str(call.input, "path", optional=True))
    if shutil.which("rg", path=session.runtime.base_env.get("PATH")):
        _rg(ws, session, call, pattern, rel, glob, mode, icase)
    else:
        _py_grep(ws, call, pattern, rel, glob, mode, icase)
    if not call.output.buf and call.exit_code == 0:
        call.note = "No matches found."


def _rg(
    ws: Workspace,
    session: Session,
    call: Call,
    pattern: str,
    rel: str,
    glob: str | None,
    mode: str,
    icase: bool,
) -> None:
    argv = ["rg", "--no-config", "--color=never", "--sort=path", "--no-messages"]
    argv += {
        "content": ["-n", "--no-heading", "--with-filename"],
        "files_with_matches": ["-l"],
        "count": ["-c", "--with-filename"],
    }[mode]
    if icase:
        argv.append("-i")
    if glob:
        argv += ["-g", glob]
    argv += ["-e", pattern, "--"]
    if rel != ".":
        argv.append(rel)
    errors = bytearray()
    code = run(call, argv, session=session, env=session.runtime.base_env, cwd=ws.root, errors=errors)
    if code == 1:
        call.exit_code = 0
    elif code == 2 and not call.output.buf:
        message = errors.decode("utf-8", "replace").strip()
        raise ToolFailure("INVALID_INPUT", f"grep_search failed: {message[:2000]}")
    elif code == 2:
        call.exit_code = 0


def _py_grep(ws: Workspace, call: Call, pattern: str, rel: str, glob: str | None, mode: str, icase: bool) -> None:
    try:
        regex = re.compile(pattern.encode("utf-8", "surrogatepass"), re.IGNORECASE if icase else 0)
    except re.error as exc:
        raise ToolFailure("INVALID_INPUT", f"invalid regular expression: {exc}") from None
    name_re = glob_regex(glob) if glob else None
    target = ws.real(rel)
    if os.path.isfile(target) and not os.path.islink(target):
        entries: Iterator[tuple[str, os.stat_result]] = iter([(rel, os.lstat(target))])
    else:
        entries = _walk(ws, rel, call, hidden=False)
    for path, st in entries:
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_GREP_FILE:
            continue
        if name_re and not name_re.match(path if "/" in (glob or "") else os.path.basename(path)):
            continue
        try:
            with open(os.path.join(ws.root, path), "rb", opener=_nofollow) as f:
                data = f.read()
        except OSError:
            continue
        if b"\0" in data[:SNIFF]:
            continue
        lines = [(i, line) for i, line in enumerate(data.split(b"\n"), start=1) if regex.search(line)]
        if not lines:
            continue
        if mode == "files_with_matches":
            call.output.add(f"{path}\n".encode())
        elif mode == "count":
            call.output.add(f"{path}:{len(lines)}\n".encode())
        else:
            call.output.add(
                b"".join(path.encode() + f":{i}:".encode() + line.rstrip(b"\r") + b"\n" for i, line in lines)
            )
        if call.output.full():
            break
    call.exit_code = 0


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


def glob_search(ws: Workspace, session: Session, call: Call) -> None:
    check_fields(call.input, {"pattern", "path"})
    pattern = require_str(call.input, "pattern", allow_empty=False)
    if "\0" in pattern:
        raise ToolFailure("INVALID_INPUT", "field 'pattern' contains a NUL byte")
    base = _dir(ws, require_str(call.input, "path", optional=True))
    if pattern.startswith("/"):
        parts = ws.parts(pattern)
        pattern, base = "/".join(parts), "."
    if ".." in pattern.split("/"):
        raise outside(pattern, "uses '..'")
    regex = glob_regex(pattern)
    prefix = "" if base == "." else base + "/"
    found: list[tuple[float, str]] = []
    for path, st in _walk(ws, base, call, hidden=True):
        if regex.match(path[len(prefix) :]):
            found.append((st.st_mtime, path))
    found.sort(key=lambda item: (-item[0], item[1]))
    if len(found) > MAX_FILES:
        call.truncated, call.limit = True, "output"
        call.note = f"[{len(found) - MAX_FILES} more files not shown; narrow the pattern]"
    call.output.add("".join(f"{p}\n" for _, p in found[:MAX_FILES]).encode())
    if not found:
        call.note = "No files found."
    call.exit_code = 0
