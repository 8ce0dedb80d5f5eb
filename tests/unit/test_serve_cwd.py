"""``openanalyst --serve`` leaves its start directory (red team finding 8): a server whose cwd is inside the
owner's workspace would pin that directory's mounts; relative paths of the settings keep their meaning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.cli import _leave_cwd
from server.settings import Settings


def test_relative_paths_are_resolved_then_the_cwd_is_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # restored after the test
    settings = Settings(data_dir=Path("data"), skills_dirs=[Path("skills")], egress_socket_dir=Path("sock"))
    moved = _leave_cwd(settings)
    assert os.getcwd() == "/"
    assert moved.data_dir == tmp_path / "data" and moved.owner_workspace == tmp_path
    assert moved.skills_dirs == [tmp_path / "skills"] and moved.egress_socket_dir == tmp_path / "sock"
