"""The owner's nosuid guard on the real kernel (root): set-id bits are stripped even when the guard cannot be
lifted because a host process holds the directory, and the error names the guard (red team finding 8)."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from toolrunner import nosuid
from toolrunner.config import SandboxConfig, release_workspace
from toolrunner.mounts import mounted_at
from toolrunner.nosuid import guard, guarded, unguard


def test_a_busy_guard_still_strips_set_id_bits_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ws = tmp_path / "owner"
    ws.mkdir()
    assert guard(ws) and guarded(ws)
    tool_made = ws / "myid"
    tool_made.write_bytes(b"#!/bin/sh\nid\n")
    os.chmod(tool_made, 0o4755)  # what a uid-0 tool can do in the sandbox
    holder = subprocess.Popen(["sleep", "60"], cwd=ws)  # a host process with its cwd inside pins the mount
    try:
        with pytest.raises(OSError, match="could not lift the nosuid guard"):
            unguard(ws)
        assert not tool_made.stat().st_mode & stat.S_ISUID
        assert guarded(ws)  # still in place: the path keeps ignoring set-id bits meanwhile

        os.chmod(tool_made, 0o4755)
        config = SandboxConfig(data_dir=tmp_path / "data", image="openanalyst/sandbox:x", owner_workspace=ws)
        with caplog.at_level(logging.ERROR, logger="toolrunner.config"):
            assert release_workspace(config, "owner") is False
        assert not tool_made.stat().st_mode & stat.S_ISUID
        text = caplog.text
        assert "nosuid guard" in text and "quota filesystem" not in text, text
    finally:
        holder.kill()
        holder.wait(10)
    assert unguard(ws) is True and mounted_at(ws) is None


def test_a_process_already_inside_when_the_guard_is_set_is_named(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A bind mount covers later lookups only: a process whose cwd was inside before the guard still sees
    set-id bits honoured through it (red team finding 7). The guard cannot close that; it names the process."""
    ws = tmp_path / "owner"
    (ws / "sub").mkdir(parents=True)
    before = subprocess.Popen(["sleep", "60"], cwd=ws / "sub")
    try:
        with caplog.at_level(logging.WARNING, logger="toolrunner.nosuid"):
            assert guard(ws)
        assert f"process {before.pid} (uid 0) had its cwd or a directory open inside {ws}" in caplog.text
    finally:
        before.kill()
        before.wait(10)
    assert unguard(ws) is True


def test_the_strip_walks_every_real_directory_and_never_follows_a_link(tmp_path: Path) -> None:
    """Set-id bits of root's files are stripped at any depth inside the workspace; a directory link to a
    directory outside it (what a sandbox would swap in to reach /usr/bin) is not entered."""
    workspace, outside = tmp_path / "ws", tmp_path / "outside"
    deep = workspace / "a" / "b" / "c"
    deep.mkdir(parents=True)
    outside.mkdir()
    inside_files = [workspace / "top", deep / "bottom", *(workspace / "a" / f"wide{i}" / "f" for i in range(50))]
    for file in inside_files:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("x")
        os.chmod(file, 0o4755)
    target = outside / "sudo-like"
    target.write_text("x")
    os.chmod(target, 0o4755)
    (workspace / "a" / "b" / "link").symlink_to(outside, target_is_directory=True)
    assert nosuid.strip_setid(workspace) == len(inside_files)
    assert all(not file.stat().st_mode & stat.S_ISUID for file in inside_files)
    assert target.stat().st_mode & stat.S_ISUID


_DEEP_STRIP = """
import os, resource, sys
from pathlib import Path
from toolrunner import nosuid
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
print(nosuid.strip_setid(Path(sys.argv[1])))
"""


def test_a_tree_deeper_than_the_fd_limit_is_stripped_whole(tmp_path: Path) -> None:
    """A chain of directories deeper than the server's fd limit (what a uid-0 tool can make to fail the strip,
    and with it the next start's guard) is stripped at every depth, side branches on the way back up too."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(300):
        os.mkdir("d", dir_fd=fd)
        os.mkdir("side", dir_fd=fd)
        side = os.open("side/f", os.O_CREAT | os.O_WRONLY, 0o755, dir_fd=fd)
        os.fchmod(side, 0o4755)
        os.close(side)
        fd, parent = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(parent)
    try:
        bottom = os.open("bottom", os.O_CREAT | os.O_WRONLY, 0o755, dir_fd=fd)
        os.fchmod(bottom, 0o4755)
        os.close(bottom)
        done = subprocess.run([sys.executable, "-c", _DEEP_STRIP, str(workspace)], capture_output=True, text=True,
                              timeout=120, check=False, cwd=Path(__file__).parents[2])
        assert (done.returncode, done.stdout.strip()) == (0, "301"), done.stderr[-2000:]
        assert not os.stat("bottom", dir_fd=fd).st_mode & stat.S_ISUID
    finally:
        os.close(fd)
