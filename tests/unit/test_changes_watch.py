"""WorkspaceWatch on a real directory with real inotify: created, modified and deleted files per call window,
changes between calls carried to the next call, overlapping calls marked, directories made and moved,
and a link swapped in never followed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from server.changes.tracker import report_of
from server.changes.watch import WorkspaceWatch

pytestmark = pytest.mark.timeout(30)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "keep").mkdir(parents=True)
    (root / "keep" / "old.txt").write_bytes(b"old")
    (root / "gone.txt").write_bytes(b"bye")
    return root


def kinds(changes: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {c.path: c.kind for c in changes}


def test_created_modified_deleted_with_hashes_before_and_after(ws: Path) -> None:
    """One call's window sees a new file, an edit (with the old hash) and a delete; untouched files are absent."""
    watch = WorkspaceWatch(ws)
    watch.start()
    watch.open("c1")
    (ws / "new.bin").write_bytes(b"\x00\x01new")
    (ws / "keep" / "old.txt").write_bytes(b"changed")
    (ws / "gone.txt").unlink()
    changes, note = watch.finish("c1")
    assert note is None
    assert kinds(changes) == {"new.bin": "created", "keep/old.txt": "modified", "gone.txt": "deleted"}
    by = {c.path: c for c in changes}
    assert by["keep/old.txt"].before is not None and by["keep/old.txt"].before.sha256 == sha(b"old")
    assert by["keep/old.txt"].after is not None and by["keep/old.txt"].after.sha256 == sha(b"changed")
    assert by["new.bin"].after is not None and by["new.bin"].after.sha256 == sha(b"\x00\x01new")
    watch.open("c2")
    changes, _ = watch.finish("c2")
    assert changes == []  # nothing new: the index took the states of c1
    watch.close()


def test_a_file_rewritten_with_the_same_bytes_or_made_and_removed_is_not_a_change(ws: Path) -> None:
    """Same content (a touch, a rewrite) and a temporary file that came and went are not reported."""
    watch = WorkspaceWatch(ws)
    watch.start()
    watch.open("c")
    (ws / "keep" / "old.txt").write_bytes(b"old")
    (ws / "tmp").write_bytes(b"x")
    (ws / "tmp").unlink()
    assert watch.finish("c")[0] == []
    watch.close()


def test_changes_between_calls_go_to_the_next_call_and_overlaps_are_marked(ws: Path) -> None:
    """A write while no call runs is reported with the next call as between_calls; a write while two calls
    run is reported to both, marked overlapping."""
    watch = WorkspaceWatch(ws)
    watch.start()
    (ws / "background.log").write_bytes(b"bg")
    watch.open("a")
    watch.open("b")
    (ws / "both.txt").write_bytes(b"x")
    a, _ = watch.finish("a")
    b, _ = watch.finish("b")
    assert [(c.path, c.between_calls) for c in a] == [("background.log", True), ("both.txt", False)]
    assert [c.overlapping for c in a if c.path == "both.txt"] == [True]
    assert [(c.path, c.overlapping) for c in b] == [("both.txt", True)]
    watch.close()


def test_directories_made_moved_and_removed(ws: Path) -> None:
    """Files in a new directory tree are created; a moved directory's files are deleted at the old path and
    created at the new; an rm -r deletes them all; later writes in new directories are seen."""
    watch = WorkspaceWatch(ws)
    watch.start()
    watch.open("c")
    (ws / "a" / "b").mkdir(parents=True)
    (ws / "a" / "b" / "f.txt").write_bytes(b"f")
    os.rename(ws / "keep", ws / "moved")
    changes, _ = watch.finish("c")
    assert kinds(changes) == {"a/b/f.txt": "created", "keep/old.txt": "deleted", "moved/old.txt": "created"}
    watch.open("d")
    (ws / "moved" / "old.txt").write_bytes(b"again")
    (ws / "a" / "b" / "g.txt").write_bytes(b"g")
    changes, _ = watch.finish("d")
    assert kinds(changes) == {"moved/old.txt": "modified", "a/b/g.txt": "created"}
    watch.open("e")
    for p in (ws / "a" / "b").iterdir():
        p.unlink()
    (ws / "a" / "b").rmdir()
    changes, _ = watch.finish("e")
    assert kinds(changes) == {"a/b/f.txt": "deleted", "a/b/g.txt": "deleted"}
    watch.close()


def test_a_link_swapped_in_is_never_followed(ws: Path, tmp_path: Path) -> None:
    """A name replaced by a symlink to a file outside is reported deleted; the outside file is never hashed."""
    outside = tmp_path / "secret"
    outside.write_bytes(b"host secret")
    watch = WorkspaceWatch(ws)
    watch.start()
    watch.open("c")
    (ws / "gone.txt").unlink()
    (ws / "gone.txt").symlink_to(outside)
    os.symlink(tmp_path, ws / "dirlink")
    changes, _ = watch.finish("c")
    assert kinds(changes) == {"gone.txt": "deleted"}
    assert all(c.after is None or c.after.sha256 != sha(b"host secret") for c in changes)
    watch.close()


def test_the_report_is_capped_with_a_note(ws: Path) -> None:
    """Past the listing cap the report says how many changed and that it is truncated."""
    watch = WorkspaceWatch(ws)
    watch.start()
    watch.open("c")
    for i in range(130):
        (ws / f"f{i:03}").write_bytes(b"x")
    report = report_of(*watch.finish("c"))
    assert report.total == 130 and len(report.files) == 100 and report.truncated
    assert report.note is not None and "130 files changed" in report.note
    watch.close()


def test_a_directory_swapped_with_a_link_thousands_of_times_settles_once(ws: Path, tmp_path: Path) -> None:
    """A rename storm (a directory and a link to the host's /etc exchanged 4,000 times) ends with the tree
    where it started: no change is reported, nothing outside was indexed, and the watch still sees writes."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    os.symlink("/etc", ws / "l")
    watch = WorkspaceWatch(ws)
    watch.start()
    watch.open("c")
    for _ in range(4000):
        assert libc.renameat2(-100, bytes(ws / "keep"), -100, bytes(ws / "l"), 2) == 0  # RENAME_EXCHANGE
    changes, _ = watch.finish("c")
    assert changes == [] and set(watch.index) == {"keep/old.txt", "gone.txt"}
    watch.open("d")
    (ws / "keep" / "old.txt").write_bytes(b"seen")
    assert kinds(watch.finish("d")[0]) == {"keep/old.txt": "modified"}
    watch.close()


def test_a_file_that_grows_while_it_is_hashed_is_hashed_to_its_stated_size(ws: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the tenant extends (sparse, to any size) right after the host's fstat is hashed only up to the
    size fstat gave: the host's read is bounded, so a growing file cannot hold the event loop or a thread."""
    from server.changes import state

    target = ws / "grows.bin"
    target.write_bytes(b"small")
    real_fstat = os.fstat

    def fstat_then_grow(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        os.truncate(target, 64 * 1024 * 1024)  # a hole: costs the tenant nothing, reading it costs the host
        return st

    rootfd = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)
    monkeypatch.setattr(state.os, "fstat", fstat_then_grow)
    try:
        got = state.state_at(rootfd, "grows.bin")
    finally:
        monkeypatch.undo()
        os.close(rootfd)
    assert got is not None and (got.size, got.sha256) == (5, sha(b"small"))


def test_a_file_with_no_before_hash_rewritten_and_its_mtime_set_back_is_modified(
        ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the first index did not hash, rewritten with as many bytes and its mtime put back (``touch -d``),
    is still reported modified: its ctime moved, and no process can set that back."""
    from server.changes import watch as watch_mod

    monkeypatch.setattr(watch_mod, "SCAN_HASH_MAX", 0)  # the index hashes nothing: every "before" is size+times
    watch = WorkspaceWatch(ws)
    watch.start()
    assert watch.index["keep/old.txt"].sha256 is None
    st = os.stat(ws / "keep" / "old.txt")
    watch.open("c")
    (ws / "keep" / "old.txt").write_bytes(b"new")
    os.utime(ws / "keep" / "old.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert kinds(watch.finish("c")[0]) == {"keep/old.txt": "modified"}
    watch.close()


def test_many_directories_moved_away_at_once_cost_one_pass_over_the_index(ws: Path, tmp_path: Path) -> None:
    """Directories moved out of the workspace in one call make their files deleted, reading the index once
    per drain, not once per directory (that was seconds on the event loop for a few thousand directories)."""

    class CountingDict(dict):  # type: ignore[type-arg]
        passes = 0

        def __iter__(self):  # type: ignore[no-untyped-def]
            CountingDict.passes += 1
            return super().__iter__()

    for i in range(50):
        (ws / f"d{i}").mkdir()
        (ws / f"d{i}" / "f.txt").write_bytes(b"f")
    (tmp_path / "away").mkdir()
    watch = WorkspaceWatch(ws)
    watch.start()
    watch.index = CountingDict(watch.index)
    watch.open("c")
    for i in range(50):
        os.rename(ws / f"d{i}", tmp_path / "away" / f"d{i}")
    changes, _ = watch.finish("c")
    assert kinds(changes) == {f"d{i}/f.txt": "deleted" for i in range(50)}
    assert CountingDict.passes <= 2
    watch.close()


def _tracker(tmp_path: Path) -> tuple[Any, Path]:
    """A ChangeTracker over a fake manager whose tenants' workspaces are plain directories; the data dir."""
    from policies.loader import load_policy
    from server.changes.tracker import ChangeTracker
    from toolrunner.config import SandboxConfig, workspace_path

    config = SandboxConfig(data_dir=tmp_path / "data", image="unused", owner_workspace=tmp_path / "owner")

    class Manager:
        def __init__(self) -> None:
            self.config = config

        async def ensure_started(self, tenant: str) -> None:
            workspace_path(config, tenant).mkdir(parents=True, exist_ok=True)

    class Backend:
        async def manager(self) -> Manager:
            return Manager()

    return ChangeTracker(Backend(), None, lambda tenant: load_policy("default")), config.data_dir / "workspaces"


def test_a_files_request_holds_its_watch_while_other_tenants_evict(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A files API request's window counts as in flight: tenants arriving past the watch cap evict idle
    watches only, so the request's own watch is not closed under it and its upload is still its change."""
    from server.changes import tracker as tracker_mod

    monkeypatch.setattr(tracker_mod, "MAX_TENANTS", 1)
    tracker, workspaces = _tracker(tmp_path)

    async def main() -> list[str]:
        async with tracker.absorbing("a", "upload", "up.txt") as changed:
            assert await tracker._watch("b") is not None  # the cap is 1: an idle watch would go now
            (workspaces / "a" / "up.txt").write_bytes(b"uploaded")
        await tracker.close()
        return [c.path for c in changed]

    assert asyncio.run(main()) == ["up.txt"]


def test_a_background_write_during_a_files_request_goes_to_the_next_call(tmp_path: Path) -> None:
    """A files request owns only the path it names: another file written while it ran (a background
    process) is not absorbed as the request's, but reported with the next tool call as between_calls."""
    tracker, workspaces = _tracker(tmp_path)
    watch = None

    async def main() -> tuple[list[str], list[tuple[str, bool]]]:
        nonlocal watch
        async with tracker.absorbing("a", "upload", "in/up.txt") as changed:
            (workspaces / "a" / "in").mkdir()
            (workspaces / "a" / "in" / "up.txt").write_bytes(b"uploaded")
            (workspaces / "a" / "late.txt").write_bytes(b"background")
        watch = await tracker._watch("a")
        assert watch is not None
        watch.open("next")
        following, _ = watch.finish("next")
        await tracker.close()
        return [c.path for c in changed], [(c.path, c.between_calls) for c in following]

    assert asyncio.run(main()) == (["in/up.txt"], [("late.txt", True)])


def test_a_directory_tree_that_appears_is_walked_off_the_event_loop(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A window whose drain holds directory events applies them in a worker thread (the walk of a moved tree
    of 50,000 files held the event loop 0.6 s), a plain file write is applied on the loop, and both report."""
    walked_on: list[bool] = []
    add_tree = WorkspaceWatch._add_tree

    def recording(self: WorkspaceWatch, rel: str) -> None:
        walked_on.append(threading.current_thread() is threading.main_thread())
        add_tree(self, rel)

    monkeypatch.setattr(WorkspaceWatch, "_add_tree", recording)
    tracker, workspaces = _tracker(tmp_path)

    async def main() -> tuple[list[str], list[str]]:
        async with tracker.absorbing("a", "one", "d") as first:
            (workspaces / "a" / "d" / "e").mkdir(parents=True)
            (workspaces / "a" / "d" / "e" / "f.txt").write_bytes(b"f")
        async with tracker.absorbing("a", "two", "") as second:
            (workspaces / "a" / "g.txt").write_bytes(b"g")
        await tracker.close()
        return [c.path for c in first], [c.path for c in second]

    assert asyncio.run(main()) == (["d/e/f.txt"], ["g.txt"])
    assert walked_on and not any(walked_on)


def test_a_read_takes_at_most_a_full_queue_and_loses_nothing(tmp_path: Path) -> None:
    """A read stops once it holds a full kernel queue's worth (the most that can have been queued when it
    began): a tenant renaming in a tight loop queued events faster than they were parsed, and reading "until
    empty" held a call's window for a minute. What is left comes with the next reads, nothing lost."""
    from server.changes import inotify as ino

    watched = tmp_path / "w"
    watched.mkdir()
    reader = ino.Inotify()
    fd = os.open(watched, os.O_RDONLY | os.O_DIRECTORY)
    try:
        reader.add(fd)
        for i in range(12_000):
            (watched / f"f{i:015d}").touch()  # CREATE + CLOSE_WRITE: 24,000 events (or a full queue)
        queued = min(24_000, reader.max_events)
        reader.max_events = 50  # as if the kernel's queue were this short: the read stops after one buffer
        first = reader.read()
        assert 50 <= len(first) < queued
        rest: list[ino.Event] = []
        while more := reader.read():
            rest.extend(more)
        assert len(first) + len(rest) == queued
    finally:
        os.close(fd)
        reader.close()
