"""Search tools: grep_search (ripgrep over files this module opened) and glob_search.

Both walk the tree themselves from a directory fd: each directory is opened O_NOFOLLOW relative to its parent
and checked to be the one just listed, so swapping a directory for a symlink mid-walk cannot lead outside the
workspace (a path string handed to ripgrep or ``os.walk`` was re-resolved by the kernel, and could be).
Symlinks are never followed; glob_search lists them as entries, grep_search skips them.

grep_search never runs the user's regex in this process (Python's `re` would hold the GIL and could backtrack
for ever): ripgrep, whose engine is linear, runs as a child and is handed the already-opened files as
``/dev/fd/N``. As we walk ourselves, ``.gitignore`` and ripgrep's other ignore files are not applied; hidden
files and directories are still skipped, and binary files (a NUL in the first 8 KiB) are not searched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import stat
import time
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

from toolrunner.runner.context import Call, Output, ToolFailure, check_fields, opt_bool, require_str
from toolrunner.runner.execute import run
from toolrunner.runner.globmatch import Glob, GlobError, State
from toolrunner.runner.paths import Workspace, outside
from toolrunner.runner.state import Session

MAX_FILES = 1000
MAX_DEPTH = 256  # one fd is held per level of the walk
MAX_BATCH = 500  # files per ripgrep run: each run costs a start-up (~5 ms), each file ~40 µs of procfs lookups
FD_RESERVE = 64  # fds left for the runner's other work while a batch is open
SLACK = 65536  # extra room for ripgrep's output: `/dev/fd/N` may be longer than the path it stands for
SNIFF = 8192
MODES = ("content", "files_with_matches", "count")

_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_DIR = _OPEN | os.O_DIRECTORY

S = TypeVar("S")


def _stopped(call: Call) -> bool:
    """True once the call is past its deadline or cancelled (recording which)."""
    if call.cancelled.is_set():
        return True
    if time.perf_counter() > call.deadline:
        call.timed_out, call.limit = True, "timeout"
        return True
    return False


def _open_top(ws: Workspace, path: str | None) -> tuple[int, str, os.stat_result]:
    """Open the file or directory a tool names; returns (fd, workspace-relative path, fstat)."""
    with ws.resolve(path or ".") as t:
        if not t.exists:
            raise ToolFailure("FILE_NOT_FOUND", f"{path!r} does not exist")
        try:
            fd = os.open(t.name, _OPEN, dir_fd=t.dir_fd)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise ToolFailure("FILE_NOT_FOUND", f"{path!r} does not exist") from None
            if exc.errno == errno.ELOOP:
                raise outside(path or ".", "changed into a symlink while being resolved") from None
            if exc.errno == errno.EACCES:
                raise ToolFailure("INVALID_INPUT", f"{path!r}: permission denied") from None
            raise ToolFailure("INVALID_INPUT", f"{path!r}: {exc.strerror}") from None
        try:
            return fd, t.rel, os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise ToolFailure("INVALID_INPUT", f"{path!r}: {exc.strerror}") from None


def _listing(fd: int) -> list[os.DirEntry[str]]:
    with os.scandir(fd) as it:
        return sorted(it, key=lambda e: e.name)


def _open_dir(parent: int, entry: os.DirEntry[str]) -> int | None:
    """Open a listed subdirectory without following links; None if it is gone or was swapped meanwhile."""
    try:
        listed = entry.stat(follow_symlinks=False)
        fd = os.open(entry.name, _DIR, dir_fd=parent)
    except OSError:
        return None
    try:
        opened = os.fstat(fd)
    except OSError:
        opened = None
    if opened is None or (opened.st_dev, opened.st_ino) != (listed.st_dev, listed.st_ino):
        os.close(fd)
        return None
    return fd


def _walk(
    call: Call,
    top_fd: int,
    top_rel: str,
    *,
    hidden: bool,
    state: S,
    descend: Callable[[S, str, str], S | None],
) -> Generator[tuple[os.DirEntry[str], str, int, S], None, None]:
    """(entry, workspace-relative path, fd of its directory, its directory's state) for every non-directory
    under the directory open as `top_fd`, in path order. `descend(state, name, rel)` gives a subdirectory's
    state, or None to skip it. The yielded fd is valid only until the next item."""
    prefix = "" if top_rel in ("", ".") else top_rel + "/"
    try:
        top = _listing(top_fd)
    except OSError as exc:
        raise ToolFailure("INVALID_INPUT", f"{top_rel!r}: {exc.strerror}") from None
    frames: list[tuple[int, str, S, Iterator[os.DirEntry[str]]]] = [(top_fd, prefix, state, iter(top))]
    try:
        while frames:
            fd, prefix, st, entries = frames[-1]
            entry = next(entries, None)
            if entry is None:
                frames.pop()
                if fd != top_fd:
                    os.close(fd)
                continue
            if _stopped(call):
                return
            name = entry.name
            if not hidden and name.startswith("."):
                continue
            rel = prefix + name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if not is_dir:
                yield entry, rel, fd, st
                continue
            sub = descend(st, name, rel)
            if sub is None:
                continue
            if len(frames) >= MAX_DEPTH:
                call.note = f"[directories more than {MAX_DEPTH} levels deep were not searched]"
                continue
            child = _open_dir(fd, entry)
            if child is None:
                continue
            try:
                listing = _listing(child)
            except OSError:
                os.close(child)
                continue
            frames.append((child, rel + "/", sub, iter(listing)))
    finally:
        for fd, *_ in frames:
            if fd != top_fd:
                os.close(fd)


# --- grep_search -----------------------------------------------------------------------------------------


class _Filter:
    """grep_search's `glob`: ripgrep's -g semantics, which we now apply ourselves.

    Without a '/', the glob is matched against a file's name; with one, against its workspace-relative path
    (a leading '/' anchors nothing more). A leading '!' excludes matching files and directories instead.
    """

    def __init__(self, glob: str | None) -> None:
        text = glob or ""
        self.negate = text.startswith("!")
        text = text[1:] if self.negate else text
        self.by_path = "/" in text
        try:
            self.glob = Glob(text.lstrip("/")) if text else None
        except GlobError as exc:
            raise ToolFailure("INVALID_INPUT", f"field 'glob': {exc}") from None

    def live(self, top_rel: str) -> bool:
        """False when no file under `top_rel` can pass (a '/' glob that leads elsewhere)."""
        return self.glob is None or self.negate or not self.by_path or bool(self.start(top_rel))

    def start(self, top_rel: str) -> State:
        if self.glob is None:
            return frozenset()
        prefix = "" if top_rel in ("", ".") else top_rel + "/"
        return self.glob.feed(self.glob.start, prefix) if self.by_path else self.glob.start

    def _hit(self, state: State, name: str) -> bool:
        assert self.glob is not None
        return self.glob.accepts(self.glob.feed(state if self.by_path else self.glob.start, name))

    def descend(self, state: State, name: str, rel: str) -> State | None:
        if self.glob is None:
            return state
        if self.negate and self._hit(state, name):
            return None
        if not self.by_path:
            return state
        sub = self.glob.feed(state, name + "/")
        return None if not sub and not self.negate else sub

    def wants(self, state: State, name: str) -> bool:
        if self.glob is None:
            return True
        return self._hit(state, name) != self.negate


def _pattern_file(pattern: str) -> int:
    """A memfd holding `pattern` as one line, for ripgrep's ``-f /dev/fd/N`` (each opener reads from the
    start). Closed by the caller."""
    fd = os.memfd_create("pattern", os.MFD_CLOEXEC)
    data = pattern.encode("utf-8", "surrogatepass") + b"\n"
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return fd


class _Grep:
    """Opens the files to search and runs ripgrep over them in batches, rewriting `/dev/fd/N` to paths."""

    def __init__(self, session: Session, call: Call, argv: list[str], mode: str, pattern_fd: int) -> None:
        self.session = session
        self.pattern_fd = pattern_fd
        self.call = call
        self.argv = argv
        self.mode = mode
        self.batch: list[tuple[int, str]] = []
        self.limit = 0
        self.searched = 0
        self.done = False
        self.code: int | None = None  # the worst exit code that is not ripgrep's 0, 1 or 2
        self._live: list[Call] = []
        call.on_cancel(self._forward_cancel)

    def _forward_cancel(self) -> None:
        for sub in list(self._live):
            sub.cancel()

    def add(self, dir_fd: int, name: str, rel: str) -> None:
        """Open `name` (never through a link, never blocking on a FIFO) and queue it."""
        try:
            fd = os.open(name, _OPEN, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                return  # gone, swapped for a link (ELOOP), unreadable: as ripgrep, skip it quietly
            if not self.batch:
                raise ToolFailure("RESOURCE_LIMIT", "grep_search: the runner is out of file descriptors") from None
            self.flush()
            try:
                fd = os.open(name, _OPEN, dir_fd=dir_fd)
            except OSError:
                return
        self.queue(fd, rel)

    def queue(self, fd: int, rel: str) -> None:
        """Keep `fd` (ours now) for the next batch if it is a regular file that does not look binary."""
        try:
            st = os.fstat(fd)
            keep = stat.S_ISREG(st.st_mode) and b"\0" not in os.pread(fd, SNIFF, 0)
        except OSError:
            keep = False
        if not keep:
            os.close(fd)
            return
        if not self.batch:
            self.limit = _batch_limit()
        self.batch.append((fd, rel))
        if len(self.batch) >= self.limit:
            self.flush()

    def flush(self) -> None:
        """Run ripgrep over the queued files (and close them); sets `done` when the call should stop."""
        batch, self.batch = self.batch, []
        try:
            if batch and not self.done and _stopped(self.call):
                self.done = True
            if batch and not self.done:
                self._search(batch, [f"/dev/fd/{fd}" for fd, _ in batch], tuple(fd for fd, _ in batch))
        finally:
            for fd, _ in batch:
                os.close(fd)

    def validate(self) -> None:
        """Nothing was searched: still let ripgrep judge the pattern, so a bad regex is reported."""
        if not self.done and not _stopped(self.call):
            self._search([], ["/dev/null"], ())

    def _search(self, batch: list[tuple[int, str]], paths: list[str], fds: tuple[int, ...]) -> None:
        call = self.call
        room = max(0, call.output.cap - len(call.output.buf))
        # Its own Call, so that ripgrep's `/dev/fd/N` names are never streamed or kept: same deadline, and the
        # host's cancel is forwarded to it.
        output = Output(room + SLACK, call.id, None)
        sub = Call(call.id, call.session, call.tool, call.input, call.timeout_s, output, started=call.started)
        self._live.append(sub)
        if call.cancelled.is_set():
            sub.cancel()
        errors = bytearray()
        try:
            code = run(
                sub,
                [*self.argv, *paths],
                session=self.session,
                env=self.session.runtime.base_env,
                cwd=self.session.runtime.workspace.root,
                errors=errors,
                pass_fds=(*fds, self.pattern_fd),
            )
        finally:
            self._live.remove(sub)
            self._merge(sub)
        self.searched += len(batch)
        data = bytes(sub.output.buf)
        wrote = self._emit(batch, data)
        if code == 2 and not wrote and errors.strip():
            message = errors.decode("utf-8", "replace").strip()
            raise ToolFailure("INVALID_INPUT", f"grep_search failed: {message[:2000]}")
        if code not in (0, 1, 2) and self.code is None:
            self.code = code
        if sub.output.dropped or call.output.full():
            call.truncated = True
            self.done = True
        if sub.timed_out or sub.cancelled.is_set() or sub.failure or code not in (0, 1, 2):
            self.done = True

    def _merge(self, sub: Call) -> None:
        """Carry what `run` recorded on the batch's Call (a timeout, a limit, a note) over to the tool call."""
        call = self.call
        if sub.timed_out:
            call.timed_out, call.limit = True, sub.limit
        elif sub.limit and not call.limit:
            call.limit = sub.limit
        if sub.failure and not call.failure:
            call.failure = sub.failure
        if sub.note:
            call.note = sub.note

    def _emit(self, batch: list[tuple[int, str]], data: bytes) -> bool:
        """Add ripgrep's output to the call with each `/dev/fd/N` replaced by its path, in batch order."""
        names = {f"/dev/fd/{fd}".encode(): rel for fd, rel in batch}
        found: dict[str, list[bytes]] = {}
        if self.mode == "files_with_matches":
            records = data.split(b"\0")[:-1]  # --null ends each name with NUL; the last piece is incomplete
            for record in records:
                if (rel := names.get(record)) is not None:
                    found[rel] = [b""]
        else:
            for line in data.split(b"\n")[:-1]:
                name, sep, rest = line.partition(b"\0")
                rel = names.get(name) if sep else None  # no NUL: a note such as "binary file matches"
                if rel is not None:
                    found.setdefault(rel, []).append(rest)
        for _, rel in batch:
            if rel not in found:
                continue
            path = os.fsencode(rel)
            if self.mode == "files_with_matches":
                self.call.output.add(path + b"\n")
            else:
                self.call.output.add(b"".join(path + b":" + rest + b"\n" for rest in found[rel]))
        return bool(found)


def _batch_limit() -> int:
    """How many files one batch may hold open, given the nofile limit and the fds already in use."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 256
    if soft == resource.RLIM_INFINITY:
        return MAX_BATCH
    return max(1, min(MAX_BATCH, soft - used - FD_RESERVE))


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
    if "\n" in pattern:
        raise ToolFailure("INVALID_INPUT", "field 'pattern' contains a newline: grep_search matches line by line")
    filt = _Filter(glob)
    path = require_str(call.input, "path", optional=True)
    top, rel, st = _open_top(ws, path)
    try:
        if not shutil.which("rg", path=session.runtime.base_env.get("PATH")):
            raise ToolFailure("TOOL_UNAVAILABLE", "grep_search needs ripgrep (rg), which the sandbox image lacks")
        # -j1: ripgrep searches the files in the order given, so output cut at the cap is a prefix in path order.
        argv = ["rg", "--no-config", "--color=never", "--no-messages", "--null", "-j1"]
        argv += {
            "content": ["-n", "--no-heading", "--with-filename"],
            "files_with_matches": ["-l"],
            "count": ["-c", "--with-filename"],
        }[mode]
        if icase:
            argv.append("-i")
        # The pattern goes by file, never in argv: every uid can read every process's argv (runner-trust.md §3).
        pattern_fd = _pattern_file(pattern)
        argv += ["-f", f"/dev/fd/{pattern_fd}", "--"]
        grep = _Grep(session, call, argv, mode, pattern_fd)
        try:
            if stat.S_ISREG(st.st_mode):
                grep.queue(os.dup(top), rel)  # a file named outright is searched whatever the glob, as rg does
            elif stat.S_ISDIR(st.st_mode) and filt.live(rel):
                walk = _walk(call, top, rel, hidden=False, state=filt.start(rel), descend=filt.descend)
                with contextlib.closing(walk):
                    for entry, frel, dir_fd, fstate in walk:
                        if grep.done:
                            break
                        if entry.is_file(follow_symlinks=False) and filt.wants(fstate, entry.name):
                            grep.add(dir_fd, entry.name, frel)
            grep.flush()
            if grep.searched == 0:
                grep.validate()
        finally:
            for fd, _ in grep.batch:
                os.close(fd)
            os.close(pattern_fd)
    finally:
        os.close(top)
    call.exit_code = grep.code if grep.code is not None else 0
    if not call.output.buf and call.exit_code == 0 and not call.note:
        call.note = "No matches found."


# --- glob_search -----------------------------------------------------------------------------------------


def glob_search(ws: Workspace, session: Session, call: Call) -> None:
    check_fields(call.input, {"pattern", "path"})
    pattern = require_str(call.input, "pattern", allow_empty=False)
    if "\0" in pattern:
        raise ToolFailure("INVALID_INPUT", "field 'pattern' contains a NUL byte")
    path = require_str(call.input, "path", optional=True)
    top, base, st = _open_top(ws, path)
    if pattern.startswith("/"):  # an absolute pattern is matched from the workspace root, whatever `path` is
        os.close(top)
        pattern = "/".join(ws.parts(pattern))
        top, base, st = _open_top(ws, ".")
    try:
        while pattern.startswith("./"):
            pattern = pattern[2:]
        if ".." in pattern.split("/"):
            raise outside(pattern, "uses '..'")
        try:
            glob = Glob(pattern)
        except GlobError as exc:
            raise ToolFailure("INVALID_INPUT", f"field 'pattern': {exc}") from None
        found = _glob_walk(call, glob, top, base) if stat.S_ISDIR(st.st_mode) else []
    finally:
        os.close(top)
    found.sort(key=lambda item: (-item[0], item[1]))
    if len(found) > MAX_FILES:
        call.truncated, call.limit = True, "output"
        call.note = f"[{len(found) - MAX_FILES} more files not shown; narrow the pattern]"
    call.output.add(b"".join(os.fsencode(p) + b"\n" for _, p in found[:MAX_FILES]))
    if not found and not call.note:
        call.note = "No files found."
    call.exit_code = 0


def _glob_walk(call: Call, glob: Glob, top: int, base: str) -> list[tuple[float, str]]:
    """(lstat mtime, path) of every non-directory under `top` whose path relative to it matches; directories
    that no continuation of the pattern could match are not entered."""

    def descend(state: State, name: str, rel: str) -> State | None:
        return glob.feed(state, name + "/") or None

    found: list[tuple[float, str]] = []
    walk = _walk(call, top, base, hidden=True, state=glob.start, descend=descend)
    with contextlib.closing(walk):
        for entry, rel, _, state in walk:
            if not glob.accepts(glob.feed(state, entry.name)):
                continue
            try:
                found.append((entry.stat(follow_symlinks=False).st_mtime, rel))
            except OSError:
                continue
    return found
