"""A uid-0 tool identity (a root-owned owner workspace) starts processes with every capability set empty,
where no-new-privileges holds; and the runner's killing thread never switches to uid 0."""

from __future__ import annotations

import os
import subprocess
import sys

from toolrunner.runner.identity import Ident, kill_all_of

CHILD = r"""
import ctypes, subprocess, sys
from toolrunner.runner.identity import Ident
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS, as the container's no-new-privileges
out = subprocess.run(["grep", "-E", "^(Uid|Cap(Inh|Prm|Eff|Amb)):", "/proc/self/status"],
                     capture_output=True, text=True, check=True, **Ident(0, 0).popen_kwargs()).stdout
sys.stdout.write(out)
"""


def test_uid0_process_starts_without_any_capability() -> None:
    """From a root parent holding every capability, a process started as Ident(0, 0) under no-new-privileges
    has empty inheritable, permitted, effective and ambient sets after exec."""
    assert os.geteuid() == 0, "the test suite runs as root (Docker, loop mounts); this check needs it too"
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=30).stdout
    facts = {line.split(":")[0]: line.split()[1:] for line in out.splitlines()}
    assert facts["Uid"] == ["0", "0", "0", "0"]
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert facts[key] == ["0000000000000000"], (key, out)


def test_killing_thread_refuses_uid_0() -> None:
    """kill_all_of(0) never switches a thread to euid 0 (which would bring CAP_KILL back into effect): it
    answers None, and the caller's forked child empties its capabilities before signalling."""
    assert kill_all_of(0) is None
    # Every tool child runs the setup between fork and exec (capabilities emptied for uid 0, oom_score_adj pinned
    # and the Landlock domain entered for all); only the runner's own identity (mode "none") starts plainly.
    assert all("preexec_fn" in Ident(uid, gid).popen_kwargs() for uid, gid in ((0, 0), (10000, 1000)))
    assert "preexec_fn" not in Ident(0, 0, own=True).popen_kwargs()
