"""File tools and every path-escape attempt through each of them, against the real runner subprocess."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from runner_support import Runner

pytestmark = pytest.mark.anyio


async def test_write_read_edit(runner: Runner) -> None:
    """write_file creates parents; read_file numbers lines; edit_file replaces one exact match."""
    r = await runner.call("write_file", path="a/b/c.txt", content="one\ntwo\nthree\n")
    assert r.error is None and (runner.ws / "a/b/c.txt").read_text() == "one\ntwo\nthree\n"
    r = await runner.call("read_file", path="a/b/c.txt")
    assert r.output == "     1\tone\n     2\ttwo\n     3\tthree\n"
    r = await runner.call("read_file", path=str(runner.ws / "a/b/c.txt"), offset=1, limit=1)
    assert r.output.startswith("     2\ttwo\n") and "offset=2" in r.output
    r = await runner.call("edit_file", path="a/b/c.txt", old_string="two", new_string="2")
    assert r.error is None and (runner.ws / "a/b/c.txt").read_text() == "one\n2\nthree\n"


async def test_edit_no_match_and_multiple_matches(runner: Runner) -> None:
    """edit_file says NO_MATCH, or MULTIPLE_MATCHES with the count unless replace_all is set."""
    (runner.ws / "f.txt").write_text("x x x")
    r = await runner.call("edit_file", path="f.txt", old_string="y", new_string="z")
    assert r.error is not None and r.error.code == "NO_MATCH"
    r = await runner.call("edit_file", path="f.txt", old_string="x", new_string="z")
    assert r.error is not None and r.error.code == "MULTIPLE_MATCHES" and "3 times" in r.error.message
    r = await runner.call("edit_file", path="f.txt", old_string="x", new_string="z", replace_all=True)
    assert r.error is None and (runner.ws / "f.txt").read_text() == "z z z"


async def test_read_errors(runner: Runner) -> None:
    """Binary, missing and directory paths give BINARY_FILE, FILE_NOT_FOUND and IS_A_DIRECTORY."""
    (runner.ws / "bin").write_bytes(b"\x00\x01\x02")
    (runner.ws / "dir").mkdir()
    for path, code in (
        ("bin", "BINARY_FILE"),
        ("missing", "FILE_NOT_FOUND"),
        ("dir", "IS_A_DIRECTORY"),
        ("missing/x", "FILE_NOT_FOUND"),
    ):
        r = await runner.call("read_file", path=path)
        assert r.error is not None and r.error.code == code, path


async def test_read_respects_output_cap(runner: Runner) -> None:
    """A long file is cut at the output cap with a note saying where to continue."""
    (runner.ws / "long.txt").write_text("".join(f"line {i}\n" for i in range(10000)))
    r = await runner.call("read_file", path="long.txt", output_cap=1000)
    assert r.truncated and r.limit == "output" and "offset=" in r.output and len(r.output) < 1200


async def test_symlink_inside_the_workspace_is_followed(runner: Runner) -> None:
    """A symlink whose target stays inside the workspace works like its target."""
    (runner.ws / "real.txt").write_text("inside\n")
    (runner.ws / "link.txt").symlink_to("real.txt")
    (runner.ws / "abs.txt").symlink_to(runner.ws / "real.txt")
    for path in ("link.txt", "abs.txt"):
        r = await runner.call("read_file", path=path)
        assert r.output == "     1\tinside\n", path


async def test_notebook_edit(runner: Runner) -> None:
    """notebook_edit replaces, inserts and deletes cells of an .ipynb file."""
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": "a1",
                "metadata": {},
                "source": ["print(1)"],
                "outputs": [{"x": 1}],
                "execution_count": 3,
            }
        ],
    }
    (runner.ws / "n.ipynb").write_text(json.dumps(nb))
    r = await runner.call("notebook_edit", path="n.ipynb", cell_index=0, new_source="print(2)\nprint(3)")
    assert r.error is None
    r = await runner.call(
        "notebook_edit",
        path="n.ipynb",
        cell_index=1,
        new_source="# Title",
        edit_mode="insert",
        cell_type="markdown",
    )
    assert r.error is None
    cells = json.loads((runner.ws / "n.ipynb").read_text())["cells"]
    assert cells[0]["source"] == ["print(2)\n", "print(3)"] and cells[0]["outputs"] == [] and cells[0]["id"] == "a1"
    assert cells[1]["cell_type"] == "markdown" and cells[1]["source"] == ["# Title"] and "id" in cells[1]
    r = await runner.call("notebook_edit", path="n.ipynb", cell_index=0, edit_mode="delete")
    assert len(json.loads((runner.ws / "n.ipynb").read_text())["cells"]) == 1
    r = await runner.call("notebook_edit", path="n.ipynb", cell_index=5, edit_mode="delete")
    assert r.error is not None and r.error.code == "INVALID_INPUT" and "out of range" in r.error.message
    (runner.ws / "bad.ipynb").write_text("{}")
    r = await runner.call("notebook_edit", path="bad.ipynb", cell_index=0)
    assert r.error is not None and r.error.code == "INVALID_INPUT"


def _escape_paths(ws: Path, outside: Path) -> dict[str, str]:
    """Every way out we know of, each set up for real on disk."""
    (ws / "to_outside").symlink_to(outside / "secret.txt")
    (ws / "to_outside_dir").symlink_to(outside)
    (ws / "rel_out").symlink_to("../outside/secret.txt")
    (ws / "sub").mkdir()
    (ws / "sub" / "up").symlink_to("../..")
    (ws / "hard.txt").hardlink_to(outside / "secret.txt")
    return {
        "dotdot": "../outside/secret.txt",
        "dotdot_deep": "sub/../../outside/secret.txt",
        "absolute": str(outside / "secret.txt"),
        "etc": "/etc/passwd",
        "symlink_file": "to_outside",
        "symlink_parent": "to_outside_dir/secret.txt",
        "relative_symlink": "rel_out",
        "symlink_dotdot_chain": "sub/up/outside/secret.txt",
        "proc_root": f"/proc/self/root{outside}/secret.txt",
        "proc_fd": "/proc/self/fd/0",
        "prefix_trick": str(ws) + "-evil/secret.txt",
    }


FILE_TOOLS: dict[str, dict[str, Any]] = {
    "read_file": {},
    "write_file": {"content": "pwned"},
    "edit_file": {"old_string": "secret", "new_string": "pwned"},
    "notebook_edit": {"cell_index": 0, "new_source": "pwned"},
    "grep_search": {"pattern": "secret"},
    "glob_search": {"pattern": "*"},
}


@pytest.mark.parametrize("tool", sorted(FILE_TOOLS))
async def test_every_escape_is_refused_by_every_file_tool(runner: Runner, tool: str) -> None:
    """`..`, absolute paths, symlinks out (file, parent, chain), /proc tricks are PATH_OUTSIDE_WORKSPACE."""
    outside = runner.ws.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    (runner.ws.parent / "ws-evil").mkdir()
    (runner.ws.parent / "ws-evil" / "secret.txt").write_text("secret\n")
    for name, path in _escape_paths(runner.ws, outside).items():
        if name == "hard.txt":
            continue
        r = await runner.call(tool, path=path, **FILE_TOOLS[tool])
        assert r.error is not None, (tool, name, r.output)
        assert r.error.code == "PATH_OUTSIDE_WORKSPACE", (tool, name, r.error)
        assert "secret" not in r.output
    assert (outside / "secret.txt").read_text() == "secret\n"


@pytest.mark.parametrize("tool", ["write_file", "edit_file", "notebook_edit"])
async def test_hard_linked_file_is_not_written(runner: Runner, tool: str) -> None:
    """A write or edit through a hard link (whose other name may be outside) is refused."""
    outside = runner.ws.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    os.link(outside / "secret.txt", runner.ws / "hard.txt")
    r = await runner.call(tool, path="hard.txt", **FILE_TOOLS[tool])
    assert r.error is not None and r.error.code == "PATH_OUTSIDE_WORKSPACE" and "hard link" in r.error.message
    assert (outside / "secret.txt").read_text() == "secret\n"


@pytest.mark.parametrize("tool", sorted(FILE_TOOLS))
async def test_nul_in_path_is_invalid(runner: Runner, tool: str) -> None:
    """A NUL byte in a path is INVALID_INPUT, for every file tool."""
    r = await runner.call(tool, path="a\x00b", **FILE_TOOLS[tool])
    assert r.error is not None and r.error.code == "INVALID_INPUT"


async def test_write_through_symlink_to_outside_does_not_create_the_target(runner: Runner) -> None:
    """A dangling symlink pointing outside is not followed to create a file there."""
    target = runner.ws.parent / "created-outside.txt"
    (runner.ws / "dangling").symlink_to(target)
    r = await runner.call("write_file", path="dangling", content="x")
    assert r.error is not None and r.error.code == "PATH_OUTSIDE_WORKSPACE"
    r = await runner.call("write_file", path="dangling/../x", content="x")
    assert r.error is not None
    assert not target.exists()


async def test_huge_single_line_is_cut_not_loaded(runner: Runner) -> None:
    """A file that is one enormous line is shown cut, with its real length, without reading it all at once."""
    (runner.ws / "min.js").write_bytes(b"x" * 3_000_000 + b"\nsecond\n")
    r = await runner.call("read_file", path="min.js")
    assert r.error is None and "[line cut: 3000001 bytes]" in r.output and "     2\tsecond" in r.output


async def test_unusual_paths_get_clear_errors(runner: Runner) -> None:
    """Over-long names, a file used as a directory and a FIFO give stable codes, never INTERNAL."""
    (runner.ws / "file").write_text("x")
    os.mkfifo(runner.ws / "fifo")
    cases = [
        ("read_file", {"path": "a" * 5000}, "INVALID_INPUT"),
        ("read_file", {"path": "file/inner"}, "FILE_NOT_FOUND"),
        ("write_file", {"path": "file/inner", "content": "x"}, "FILE_NOT_FOUND"),
        ("read_file", {"path": "fifo"}, "INVALID_INPUT"),
        ("write_file", {"path": "fifo", "content": "x"}, "INVALID_INPUT"),
        ("write_file", {"path": ".", "content": "x"}, "IS_A_DIRECTORY"),
    ]
    for tool, inp, code in cases:
        r = await runner.call(tool, **inp)
        assert r.error is not None and r.error.code == code, (tool, inp, r.error)
