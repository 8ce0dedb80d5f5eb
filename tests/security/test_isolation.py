"""What a sandbox cannot reach: the Docker socket, capabilities, privileges, the network, the root filesystem,
and anything outside /workspace through the file tools (symlinks, `..`, absolute paths)."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


def ok(outcome: Any) -> str:
    assert outcome.result.error is None, outcome.result
    return str(outcome.result.output)


def still_serving(harness: Any) -> None:
    assert "attacker-ok" in ok(harness.bash("attacker", "echo attacker-ok"))
    assert "witness-ok" in ok(harness.bash("witness", "echo witness-ok"))


def test_no_docker_socket_no_capabilities_no_new_privileges(harness: Any) -> None:
    """The engine socket is absent, every capability set of a tool is empty, NoNewPrivs is 1, and the tool
    runs as a session uid from the pool, in the workspace group and no other."""
    out = ok(harness.bash("attacker", "ls -la /var/run/docker.sock /run/docker.sock 2>&1; "
                                      "grep -E '^(Cap(Eff|Prm|Inh|Amb)|NoNewPrivs)' /proc/self/status; id -G; id -u"))
    assert "No such file" in out and "docker.sock ->" not in out
    for cap_set in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert f"{cap_set}:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out
    groups, uid = out.strip().splitlines()[-2:]
    assert groups == "1000" and 10000 <= int(uid) < 11000
    still_serving(harness)


def test_root_filesystem_is_read_only(harness: Any) -> None:
    """Writing to /etc or /usr fails; only /workspace and /tmp are writable."""
    out = ok(harness.bash("attacker", "touch /etc/x /usr/x 2>&1; touch /workspace/w /tmp/t && echo writable"))
    assert out.count("Read-only file system") == 2 and "writable" in out
    still_serving(harness)


def test_no_network_under_the_default_policy(harness: Any) -> None:
    """Connecting out fails: the container has only a loopback interface."""
    code = ("import socket\ns = socket.socket()\ns.settimeout(3)\ntry:\n    s.connect(('1.1.1.1', 53))\n"
            "    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e.errno)\n")
    out = ok(harness.call("attacker", "python", {"code": code}))
    assert "refused" in out and "CONNECTED" not in out
    assert "eth0" not in ok(harness.bash("attacker", "cat /proc/net/dev"))
    still_serving(harness)


ESCAPES = ["../outside.txt", "/etc/passwd", "link_file", "link_dir/etc/passwd", "sub/../../outside.txt",
           "/proc/self/root/etc/passwd", "/workspace/../etc/passwd"]


@pytest.fixture(scope="module")
def escape_links(harness: Any) -> None:
    ok(harness.bash("attacker", "ln -sfn /etc/passwd link_file; ln -sfn / link_dir; mkdir -p sub; "
                                "echo '{}' > /tmp/nb.ipynb; ln -sfn /tmp/nb.ipynb link_nb.ipynb"))


def _refused(outcome: Any) -> None:
    result = outcome.result
    assert result.error is not None, result
    assert result.error.code in ("PATH_OUTSIDE_WORKSPACE", "INVALID_INPUT"), result
    assert "root:x:0:0" not in result.output


@pytest.mark.usefixtures("escape_links")
@pytest.mark.parametrize("path", ESCAPES)
def test_file_tools_refuse_paths_outside_the_workspace(harness: Any, path: str) -> None:
    """read/write/edit/grep/glob/notebook tools refuse symlink, `..` and absolute escapes."""
    t = "attacker"
    _refused(harness.call(t, "read_file", {"path": path}))
    _refused(harness.call(t, "write_file", {"path": path, "content": "pwned"}))
    _refused(harness.call(t, "edit_file", {"path": path, "old_string": "root", "new_string": "pwned"}))
    grep = harness.call(t, "grep_search", {"pattern": "root:x", "path": path}).result
    assert "root:x:0:0" not in grep.output, grep
    glob = harness.call(t, "glob_search", {"pattern": "*", "path": path}).result
    assert "passwd" not in glob.output and "shadow" not in glob.output, glob
    nb_path = "link_nb.ipynb" if path == "link_file" else path
    _refused(harness.call(t, "notebook_edit", {"path": nb_path, "cell_index": 0, "new_source": "x"}))
    assert "pwned" not in ok(harness.bash(t, "cat /tmp/nb.ipynb; head -1 /etc/passwd"))


@pytest.mark.usefixtures("escape_links")
def test_searches_from_the_workspace_do_not_follow_links_out(harness: Any) -> None:
    """A grep or glob over the whole workspace does not descend into a symlink to /."""
    t = "attacker"
    grep = harness.call(t, "grep_search", {"pattern": "root:x:0:0"}).result
    assert "root:x:0:0" not in grep.output
    glob = harness.call(t, "glob_search", {"pattern": "**/passwd"}).result
    assert "passwd" not in glob.output
    nb = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    ok(harness.call(t, "write_file", {"path": "inside.ipynb", "content": json.dumps(nb)}))
    still_serving(harness)
