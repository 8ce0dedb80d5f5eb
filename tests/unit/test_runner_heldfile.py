"""The runner's held kernel files (toolrunner/runner/heldfile.py) are read whole: a seq_file gives one page per
read, and the runner's children list passes a page at about 700 children. Read once, the list lost the rest, and
a call's leftover could escape the sweep while another session flooded it (review finding)."""

from __future__ import annotations

import os
import subprocess

import pytest

from toolrunner.runner import heldfile
from toolrunner.runner.procs import main_thread_children

pytestmark = pytest.mark.timeout(120)


def test_a_children_list_longer_than_a_page_is_read_whole() -> None:
    """A thousand children (well past a page of pids): every one is in the held read and in the runner's list,
    the last started included."""
    me = os.getpid()
    path = f"/proc/{me}/task/{me}/children"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(1000):
            procs.append(subprocess.Popen(["sleep", "120"], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with open(path, "rb") as f:
            assert len(f.read()) > 4096  # the case is real: more than one page
        listed = {int(x) for x in (heldfile.read(path) or b"").split()}
        started = {p.pid for p in procs}
        assert started <= listed, f"{len(started - listed)} of {len(started)} children missing"
        assert procs[-1].pid in main_thread_children(me)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
