"""grep_search and glob_search against the real runner: ripgrep over files the runner opened, fd walks that
never follow a link (even one swapped in mid-walk), and globs matched without backtracking."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from runner_support import Runner

from toolrunner.runner.context import Call, Output, ToolFailure
from toolrunner.runner.paths import Workspace

pytestmark = pytest.mark.anyio
needs_rg = pytest.mark.skipif(shutil.which("rg") is None, reason="grep_search needs ripgrep")


@pytest.fixture
def tree(runner: Runner) -> Runner:
    ws = runner.ws
    (ws / "src" / "pkg").mkdir(parents=True)
    (ws / "src" / "a.py").write_text("import os\nTODO: fix\n")
    (ws / "src" / "pkg" / "b.py").write_text("todo later\nTODO again\n")
    (ws / "notes.md").write_text("nothing here\n")
    (ws / "blob.bin").write_bytes(b"TODO\x00\x01")
    outside = ws.parent / "outside"
    outside.mkdir()
    (outside / "leak.py").write_text("TODO secret\n")
    (ws / "linked").symlink_to(outside)
    for i, name in enumerate(["notes.md", "src/a.py", "src/pkg/b.py"]):
        os.utime(ws / name, (1_000_000 + i, 1_000_000 + i))
    return runner


@needs_rg
async def test_grep_modes(tree: Runner) -> None:
    """files_with_matches, content (path:line:text) and count modes, never entering a symlinked dir."""
    r = await tree.call("grep_search", pattern="TODO")
    assert sorted(r.output.split()) == ["src/a.py", "src/pkg/b.py"]
    r = await tree.call("grep_search", pattern="TODO", output_mode="content", path="src")
    assert "src/a.py:2:TODO: fix" in r.output and "src/pkg/b.py:2:TODO again" in r.output
    r = await tree.call("grep_search", pattern="todo", output_mode="count", case_insensitive=True)
    assert sorted(r.output.split()) == ["src/a.py:1", "src/pkg/b.py:2"]
    assert "secret" not in r.output and "leak" not in r.output


@needs_rg
async def test_grep_glob_filter_and_no_match(tree: Runner) -> None:
    """A glob limits the files searched; no match says so without an error."""
    r = await tree.call("grep_search", pattern="TODO", glob="b.*")
    assert r.output.split() == ["src/pkg/b.py"]
    r = await tree.call("grep_search", pattern="absent-word")
    assert r.error is None and "No matches" in r.output


@needs_rg
async def test_grep_invalid_regex(tree: Runner) -> None:
    """An invalid regular expression is INVALID_INPUT."""
    r = await tree.call("grep_search", pattern="(unclosed")
    assert r.error is not None and r.error.code == "INVALID_INPUT"


async def test_glob_newest_first(tree: Runner) -> None:
    """glob_search lists matching paths newest first and does not walk into symlinked directories."""
    r = await tree.call("glob_search", pattern="**/*.py")
    assert r.output.split() == ["src/pkg/b.py", "src/a.py"]
    r = await tree.call("glob_search", pattern="*.py", path="src")
    assert r.output.split() == ["src/a.py"]
    r = await tree.call("glob_search", pattern="*.{md,bin}")
    assert sorted(r.output.split()) == ["blob.bin", "notes.md"]
    r = await tree.call("glob_search", pattern="nothing*")
    assert "No files found" in r.output


@needs_rg
@pytest.mark.parametrize("mode", ["content", "files_with_matches", "count"])
async def test_grep_output_shapes(runner: Runner, mode: str) -> None:
    """Each mode's exact output, paths sorted; linked files, binaries and hidden files are not searched."""
    ws = runner.ws
    (ws / "d").mkdir()
    (ws / "d" / "a.txt").write_text("x\nTODO one\nTODO two\n")
    (ws / "b.txt").write_text("todo b\n")
    (ws / "bin").write_bytes(b"TODO\x00")
    (ws / ".hidden").write_text("TODO hidden\n")
    (ws.parent / "out.txt").write_text("TODO outside\n")
    (ws / "link.txt").symlink_to(ws.parent / "out.txt")
    r = await runner.call("grep_search", pattern="todo", output_mode=mode, case_insensitive=True)
    expected = {
        "content": "b.txt:1:todo b\nd/a.txt:2:TODO one\nd/a.txt:3:TODO two\n",
        "files_with_matches": "b.txt\nd/a.txt\n",
        "count": "b.txt:1\nd/a.txt:2\n",
    }[mode]
    assert r.error is None and r.output == expected


@needs_rg
async def test_grep_glob_semantics(runner: Runner) -> None:
    """The glob as ripgrep's -g: a name glob, a workspace-relative path glob, a '!' exclusion (of files and
    directories); a file named by `path` is searched whatever the glob."""
    ws = runner.ws
    for rel in ["a.py", "src/b.py", "src/c.md", "src/gen/d.py", "docs/e.py"]:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text("needle\n")

    async def files(**kw: Any) -> list[str]:
        r = await runner.call("grep_search", pattern="needle", **kw)
        assert r.error is None, r.error
        return [] if "No matches" in r.output else r.output.split()

    assert await files(glob="*.py") == ["a.py", "docs/e.py", "src/b.py", "src/gen/d.py"]
    assert await files(glob="src/*.py") == ["src/b.py"]
    assert await files(glob="src/*.py", path="src") == ["src/b.py"]  # relative to the workspace, not `path`
    assert await files(glob="*.py", path="docs") == ["docs/e.py"]
    assert await files(glob="!*.py") == ["src/c.md"]
    assert await files(glob="!gen") == ["a.py", "docs/e.py", "src/b.py", "src/c.md"]
    assert await files(glob="*.md", path="src/b.py") == ["src/b.py"]
    r = await runner.call("grep_search", pattern="needle", glob="{a,b}" * 9)
    assert r.error is not None and r.error.code == "INVALID_INPUT"


@needs_rg
async def test_grep_many_files_sorted_across_batches(runner: Runner) -> None:
    """More files than one ripgrep run takes: every match is reported once, in path order."""
    names = [f"f{i:04d}.txt" for i in range(1100)]
    for name in names:
        (runner.ws / name).write_text(f"line\nhit {name}\n")
    r = await runner.call("grep_search", pattern="hit", output_mode="content", timeout_s=60)
    assert r.error is None
    assert r.output.splitlines() == [f"{name}:2:hit {name}" for name in names]
    r = await runner.call("grep_search", pattern="hit", output_mode="count", timeout_s=60)
    assert r.output.split() == [f"{name}:1" for name in names]


@needs_rg
async def test_grep_output_cap_stops_early(runner: Runner) -> None:
    """Output beyond the cap is cut (and said to be), and the search stops instead of running on."""
    for i in range(600):
        (runner.ws / f"f{i:04d}.txt").write_text("hit " * 200 + "\n")
    r = await runner.call("grep_search", pattern="hit", output_mode="content", output_cap=4096, timeout_s=60)
    assert r.truncated and r.error is None
    shown = [line.split(":")[0] for line in r.output.splitlines() if ":1:" in line]
    assert shown and shown == [f"f{i:04d}.txt" for i in range(len(shown))]  # a prefix, in path order


@needs_rg
async def test_grep_empty_directory_still_checks_the_regex(runner: Runner) -> None:
    """With nothing to search, a bad regex is still INVALID_INPUT and a good one finds nothing."""
    (runner.ws / "empty").mkdir()
    r = await runner.call("grep_search", pattern="(unclosed", path="empty")
    assert r.error is not None and r.error.code == "INVALID_INPUT"
    r = await runner.call("grep_search", pattern="ok", path="empty")
    assert r.error is None and "No matches" in r.output


def test_grep_without_ripgrep_is_unavailable(tmp_path: Path) -> None:
    """No rg in the image: TOOL_UNAVAILABLE (the old pure-Python fallback ran the user's regex under the GIL)."""
    from toolrunner.runner.search import grep_search

    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "a.txt").write_text("TODO\n")
    (tmp_path / "bin").mkdir()
    ws = Workspace(str(tmp_path / "ws"))
    session: Any = SimpleNamespace(runtime=SimpleNamespace(base_env={"PATH": str(tmp_path / "bin")}, workspace=ws))
    call = Call(1, "s", "grep_search", {"pattern": "TODO"}, 5.0, Output(10_000, 1, None))
    with pytest.raises(ToolFailure) as info:
        grep_search(ws, session, call)
    assert info.value.code == "TOOL_UNAVAILABLE"
    assert not call.output.buf


@needs_rg
@pytest.mark.parametrize("tool", ["grep_search", "glob_search"])
@pytest.mark.parametrize("why", ["deadline", "cancel"])
def test_search_stops_at_the_deadline_or_cancel(tmp_path: Path, tool: str, why: str) -> None:
    """A call already past its deadline, or cancelled, walks no further and starts no ripgrep."""
    from toolrunner.runner import search

    (tmp_path / "ws" / "d").mkdir(parents=True)
    (tmp_path / "ws" / "d" / "a.txt").write_text("TODO\n")
    ws = Workspace(str(tmp_path / "ws"))
    session: Any = SimpleNamespace(runtime=SimpleNamespace(base_env=dict(os.environ), workspace=ws))
    call = Call(1, "s", tool, {"pattern": "TODO" if tool == "grep_search" else "**/*"}, 5.0, Output(10_000, 1, None))
    if why == "deadline":
        call.started -= 10
    else:
        call.cancel()
    getattr(search, tool)(ws, session, call)  # `run` would fail on this stand-in session: it must not be reached
    assert not call.output.buf
    assert call.timed_out is (why == "deadline")


async def test_glob_lists_links_without_following_them(runner: Runner) -> None:
    """Symlinks are entries (to files or directories, never entered); hidden files are listed; a path that
    is a file lists nothing; a bad pattern is INVALID_INPUT."""
    ws = runner.ws
    outside = ws.parent / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "secret.txt").write_text("x")
    (ws / "a").mkdir()
    (ws / "a" / ".env").write_text("x")
    (ws / "a" / "f.txt").write_text("x")
    (ws / "dirlink").symlink_to(outside)
    (ws / "a" / "filelink.txt").symlink_to(outside / "deep" / "secret.txt")
    r = await runner.call("glob_search", pattern="**/*")
    assert sorted(r.output.split()) == ["a/.env", "a/f.txt", "a/filelink.txt", "dirlink"]
    r = await runner.call("glob_search", pattern="*.txt", path="a/f.txt")
    assert "No files found" in r.output
    r = await runner.call("glob_search", pattern=str(outside) + "/**/*")
    assert r.error is not None and r.error.code == "PATH_OUTSIDE_WORKSPACE"
    r = await runner.call("glob_search", pattern=os.path.realpath(ws) + "/a/*.txt")
    assert sorted(r.output.split()) == ["a/f.txt", "a/filelink.txt"]
    r = await runner.call("glob_search", pattern="{a,b}" * 9)
    assert r.error is not None and r.error.code == "INVALID_INPUT"


@pytest.mark.timeout(60)
async def test_pathological_globs_do_not_wedge_the_runner(runner: Runner) -> None:
    """Patterns that make a backtracking regex run for ever finish at once (both tools)."""
    ws = runner.ws
    deep = ws.joinpath(*["d"] * 40)
    deep.mkdir(parents=True)
    for d in (ws, deep):
        (d / ("a" * 200)).write_text("needle\n")
    star = "*a" * 12 + "*b"
    nested = "**/" * 200 + "*a" * 8 + "*b"
    for pattern in (star, nested):
        r = await runner.call("glob_search", pattern=pattern, timeout_s=30)
        assert r.error is None and "No files found" in r.output
    if shutil.which("rg"):
        r = await runner.call("grep_search", pattern="needle", glob=star, timeout_s=30)
        assert r.error is None and "No matches" in r.output
    r = await runner.call("glob_search", pattern="**/" + "a" * 200, timeout_s=30)
    assert len(r.output.split()) == 2


@needs_rg
@pytest.mark.timeout(300)
async def test_symlink_swap_race_never_leaks(runner: Runner) -> None:
    """A thread keeps swapping `a` between a real directory and a symlink to one outside the workspace while
    grep_search and glob_search run over and over: the outside file is never named or read."""
    ws = runner.ws
    outside = ws.parent / "outside_dir"
    outside.mkdir()
    (outside / "leaked_secret.txt").write_text("SECRET-OUTSIDE\n")
    (ws / "a").mkdir()
    (ws / "a" / "inside.txt").write_text("MARKER-INSIDE\n")
    parked, link = ws / ".a_parked", ws / ".a_link"
    link.symlink_to(outside)
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        while not stop.is_set():
            os.rename(ws / "a", parked)
            os.rename(link, ws / "a")
            os.rename(ws / "a", link)
            os.rename(parked, ws / "a")
            swaps += 1

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    seen_marker = 0
    calls = 0
    try:
        for i in range(1000):
            if i % 2:
                r = await runner.call("glob_search", pattern="**/*.txt", path="a" if i % 4 == 1 else None)
            else:
                mode = ("content", "files_with_matches")[i % 4 // 2]
                r = await runner.call("grep_search", pattern="SECRET|MARKER", output_mode=mode)
            calls += 1
            text = r.output + (r.error.message if r.error else "")
            assert "SECRET" not in text and "leaked_secret" not in text, (i, r)
            seen_marker += "MARKER" in text or "inside.txt" in text
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
    assert calls >= 1000 and swaps > 100
    assert seen_marker > 0  # the walks did reach the real directory between swaps
