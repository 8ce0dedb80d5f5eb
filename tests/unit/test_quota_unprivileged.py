"""A server that cannot mount (here: not root) leaves the workspace a plain directory, reports the quota as not
enforced with the reason, says so at ERROR, and refuses a workspace whose files are already in an image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHILD = r"""
import json, logging, os, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
import shutil, subprocess  # loaded while still root: /root (the interpreter's stdlib) is 0700
from toolrunner.errors import SandboxStartFailed
from toolrunner.quota import LoopQuota, spec_for, warn_at_start
os.setegid(65534); os.seteuid(65534)  # a process that is not root from here on
root = Path(sys.argv[1])
warn_at_start(True)
report = LoopQuota(root / "quota" / "t.ext4", root / "ws").ensure(spec_for(64, None))
out = {"usage": report.usage()}
(root / "quota").mkdir(); (root / "quota" / "u.ext4").write_bytes(b"")
try:
    LoopQuota(root / "quota" / "u.ext4", root / "ws2").ensure(spec_for(64, None))
    out["refused"] = None
except SandboxStartFailed as exc:
    out["refused"] = str(exc)
print(json.dumps(out))
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory uid 65534 can reach (pytest's own are under a 0700 directory of root's)."""
    path = Path(tempfile.mkdtemp(prefix="oa-quota-nonroot-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_not_root_means_not_enforced_and_said_loudly(open_dir: Path) -> None:
    """As a non-root process: usage() shows enforced false, the inode count the policy asked, the reason;
    warn_at_start logs WORKSPACE DISK QUOTAS ARE NOT ENFORCED; an existing image is refused, not hidden."""
    assert os.geteuid() == 0, "the test suite runs as root; this check drops to uid 65534 in a child"
    os.chmod(open_dir, 0o777)  # the child, not root, writes here
    for name in ("ws", "ws2"):
        (open_dir / name).mkdir(mode=0o777)
    done = subprocess.run([sys.executable, "-c", CHILD, str(open_dir)], capture_output=True, text=True,
                          timeout=60, check=True, cwd=Path(__file__).resolve().parents[2])
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    usage = facts["usage"]
    assert usage["enforced"] is False and usage["mechanism"] is None and usage["bytes"] == 64 * 1024 * 1024
    assert usage["inodes"] == 4096 and "not root" in usage["reason"]
    assert "ERROR WORKSPACE DISK QUOTAS ARE NOT ENFORCED: the server is not root" in done.stderr
    assert "cannot be mounted" in facts["refused"]
    assert not list((open_dir / "ws").iterdir())  # nothing was mounted or written there
