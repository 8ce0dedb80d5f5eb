"""grep_search and glob_search against the real runner (ripgrep if installed, else the fallback)."""

from __future__ import annotations

import os

import pytest
from runner_support import Runner

from toolrunner.runner.search import glob_regex

pytestmark = pytest.mark.anyio


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


async def test_grep_modes(tree: Runner) -> None:
    """files_with_matches, content (path:line:text) and count modes, never entering a symlinked dir."""
    r = await tree.call("grep_search", pattern="TODO")
    assert sorted(r.output.split()) == ["src/a.py", "src/pkg/b.py"]
    r = await tree.call("grep_search", pattern="TODO", output_mode="content", path="src")
    assert "src/a.py:2:TODO: fix" in r.output and "src/pkg/b.py:2:TODO again" in r.output
    r = await tree.call("grep_search", pattern="todo", output_mode="count", case_insensitive=True)
    assert sorted(r.output.split()) == ["src/a.py:1", "src/pkg/b.py:2"]
    assert "secret" not in r.output and "leak" not in r.output


async def test_grep_glob_filter_and_no_match(tree: Runner) -> None:
    """A glob limits the files searched; no match says so without an error."""
    r = await tree.call("grep_search", pattern="TODO", glob="b.*")
    assert r.output.split() == ["src/pkg/b.py"]
    r = await tree.call("grep_search", pattern="absent-word")
    assert r.error is None and "No matches" in r.output


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


def test_glob_translation() -> None:
    """`**/` spans directories, `*` and `?` stay within one, braces and classes work."""
    assert glob_regex("**/*.py").match("a/b/c.py") and glob_regex("**/*.py").match("c.py")
    assert not glob_regex("*.py").match("a/c.py")
    assert glob_regex("src/?.{py,md}").match("src/a.md")
    assert glob_regex("[!x]*").match("abc") and not glob_regex("[!x]*").match("xbc")


@pytest.mark.parametrize("mode", ["content", "files_with_matches", "count"])
def test_python_fallback_matches_ripgrep_shape(tmp_path: os.PathLike[str], mode: str) -> None:
    """Without rg in the image, the pure-Python grep gives the same shapes and skips symlinks and binaries."""
    from pathlib import Path

    from toolrunner.runner import search
    from toolrunner.runner.context import Call, Output
    from toolrunner.runner.paths import Workspace

    ws_dir = Path(tmp_path) / "ws"
    (ws_dir / "d").mkdir(parents=True)
    (ws_dir / "d" / "a.txt").write_text("x\nTODO one\nTODO two\n")
    (ws_dir / "bin").write_bytes(b"TODO\x00")
    (Path(tmp_path) / "out.txt").write_text("TODO outside\n")
    (ws_dir / "link.txt").symlink_to(Path(tmp_path) / "out.txt")
    call = Call(1, "s", "grep_search", {}, 5.0, Output(10_000, 1, None))
    search._py_grep(Workspace(str(ws_dir)), call, "todo", ".", None, mode, True)
    text, _ = call.output.text()
    expected = {
        "content": "d/a.txt:2:TODO one\nd/a.txt:3:TODO two\n",
        "files_with_matches": "d/a.txt\n",
        "count": "d/a.txt:2\n",
    }[mode]
    assert text == expected
