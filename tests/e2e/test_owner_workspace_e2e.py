"""The owner's first run as root: a server started as root with a root-owned owner workspace (0755 root:root)
lets the agent write there through the HTTP tool API, the files are root's on the host, and the tools run as
uid 0 with no capability at all: they cannot signal, trace or read the runner, and a setuid-root binary gains
nothing. ``GET /v1/sandbox`` says the workspace is writable and by whom."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from toolrunner.mounts import mounted_at

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]

# Run inside the sandbox by the owner's bash tool: what a uid-0 tool process can do to the runner (uid 999).
PROBE = r'''
import ctypes, json, os, signal
def runner():
    for p in os.listdir("/proc"):
        if p.isdigit():
            with open(f"/proc/{p}/status") as f:
                if any(l.startswith("Uid:") and l.split()[1] == "999" for l in f):
                    return int(p)
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return e.errno
libc = ctypes.CDLL(None, use_errno=True)
def ptrace():
    if libc.ptrace(16, pid, 0, 0) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")
pid = runner()
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
print(json.dumps({
    "runner": pid,
    "uid": status["Uid"].split(), "caps": [status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")],
    "nnp": status["NoNewPrivs"].strip(),
    "signal": attempt(lambda: os.kill(pid, signal.SIGSTOP)), "signal0": attempt(lambda: os.kill(pid, 0)),
    "fd_names": attempt(lambda: os.listdir(f"/proc/{pid}/fd")),
    "fd_link": attempt(lambda: os.readlink(f"/proc/{pid}/fd/0")),
    "fd_open": attempt(lambda: os.close(os.open(f"/proc/{pid}/fd/1", os.O_WRONLY))),
    "environ": attempt(lambda: open(f"/proc/{pid}/environ").read()),
    "mem": attempt(lambda: open(f"/proc/{pid}/mem", "rb").read(1)), "ptrace": attempt(ptrace),
}))
'''


@pytest.fixture
def root_server(serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """A server (run as root, like the README's two commands in a container) whose owner workspace is a
    root-owned 0755 directory."""
    assert os.geteuid() == 0, "this test checks a server started as root"
    workspace = tmp_path / "root-ws"
    workspace.mkdir()
    os.chown(workspace, 0, 0)
    os.chmod(workspace, 0o755)
    (workspace / "existing.txt").write_text("before\n")
    os.chmod(workspace / "existing.txt", 0o644)
    env = {"OPENANALYST_OWNER_WORKSPACE": str(workspace),
           "OPENANALYST_SANDBOX_LABELS": json.dumps({"openanalyst.test": "1"})}
    started = serve(env=env, data_dir=tmp_path / "data")
    yield started, workspace
    if started.proc.poll() is None:
        assert started.stop() == 0


def tool(server: Any, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{server.base}/v1/tools/{name}", json={"input": tool_input}, timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_root_owned_workspace_is_writable_on_the_first_run(root_server: tuple[Any, Path]) -> None:
    """write_file, edit of an existing 0644 file and bash all write the root-owned workspace; the files are
    root's on the host; GET /v1/sandbox says writable, tools uid 0."""
    server, workspace = root_server
    before = httpx.get(f"{server.base}/v1/sandbox", timeout=30).json()["workspace"]  # no container yet
    assert before["writable"] is True and before["tools_uid"] == 0
    wrote = tool(server, "write_file", {"path": "notes/first.txt", "content": "hello\n"})
    assert wrote["error"] is None, wrote
    assert tool(server, "bash", {"command": "echo more >> existing.txt && touch made-by-bash"})["exit_code"] == 0
    for name in ("notes/first.txt", "existing.txt", "made-by-bash"):
        st = (workspace / name).stat()
        assert (st.st_uid, st.st_gid) == (0, 0), name
    assert (workspace / "notes/first.txt").read_text() == "hello\n"
    assert (workspace / "existing.txt").read_text() == "before\nmore\n"
    info = httpx.get(f"{server.base}/v1/sandbox", timeout=30).json()
    assert info["workspace"]["writable"] is True and info["workspace"]["tools_uid"] == 0
    assert info["workspace"]["quota"]["enforced"] is False  # the owner's own directory is exempt by default


def test_read_only_root_workspace_says_not_writable(serve: Callable[..., Any], sandbox_image: str,
                                                    tmp_path: Path) -> None:
    """A root-owned 0555 owner workspace: GET /v1/sandbox says writable false (before and after the first
    call) and a write fails with a permission error, not silently."""
    workspace = tmp_path / "ro-ws"
    workspace.mkdir(mode=0o555)
    os.chmod(workspace, 0o555)
    server = serve(env={"OPENANALYST_OWNER_WORKSPACE": str(workspace)}, data_dir=tmp_path / "data")
    assert httpx.get(f"{server.base}/v1/sandbox", timeout=30).json()["workspace"]["writable"] is False
    out = tool(server, "bash", {"command": "touch x"})
    assert out["exit_code"] != 0 and "Permission denied" in out["output"]
    assert httpx.get(f"{server.base}/v1/sandbox", timeout=30).json()["workspace"]["writable"] is False


def test_uid0_tools_have_no_capability_and_cannot_reach_the_runner(root_server: tuple[Any, Path]) -> None:
    """A uid-0 tool process: every capability set empty, no-new-privileges; SIGSTOP and signal 0 to the runner,
    opening or reading the links of its fds (their numbers are listable: /proc/<pid>/fd of a non-dumpable
process is root's), its environ and memory, and PTRACE_ATTACH all fail with EPERM/EACCES; a setuid-root copy of
    python executed from the workspace still has no capability."""
    server, workspace = root_server
    (workspace / "probe.py").write_text(PROBE)
    out = tool(server, "bash", {"command": "python3 probe.py"})
    facts = json.loads(out["output"].strip().splitlines()[-1])
    assert facts["runner"] is not None and facts["uid"] == ["0", "0", "0", "0"]
    assert facts["caps"] == ["0000000000000000"] * 4 and facts["nnp"] == "1"
    assert facts["signal"] == 1 and facts["signal0"] == 1  # EPERM
    assert facts["fd_link"] in (1, 13) and facts["fd_open"] in (1, 13), facts
    assert facts["environ"] in (1, 13) and facts["mem"] in (1, 13), facts
    assert facts["ptrace"] == 1

    suid = tool(server, "bash", {"command": "cp \"$(command -v python3)\" suidpy && chmod 4755 suidpy && "
                                            "./suidpy -c \"print(open('/proc/self/status').read())\""})
    caps = {line.split(":")[0]: line.split()[1] for line in suid["output"].splitlines() if line.startswith("Cap")}
    assert caps["CapPrm"] == caps["CapEff"] == caps["CapAmb"] == "0000000000000000", suid  # nothing gained
    for name, code in (("python", "print(open('/proc/self/status').read())"),
                       ("repl", "print(open('/proc/self/status').read())")):
        status = tool(server, name, {"code": code})["output"]
        assert "CapEff:\t0000000000000000" in status and "CapPrm:\t0000000000000000" in status, (name, status)
        assert "Uid:\t0\t0\t0\t0" in status, (name, status)
    # The runner still answers after all of it.
    assert tool(server, "bash", {"command": "echo alive"})["output"] == "alive\n"


def test_setuid_root_file_is_inert_on_the_host(root_server: tuple[Any, Path]) -> None:
    """A uid-0 tool may chmod u+s its own file in the workspace, but the host's path to the workspace is a
    nosuid bind while the sandbox exists, and DELETE /v1/sandbox lifts it only after stripping the bit."""
    server, workspace = root_server
    made = tool(server, "bash", {"command": "cp /bin/true rootshell && chmod 4755 rootshell && stat -c %a rootshell"})
    assert made["output"].strip() == "4755", made
    assert (workspace / "rootshell").stat().st_mode & stat.S_ISUID  # the bit is on disk...
    assert os.statvfs(workspace).f_flag & os.ST_NOSUID  # ...and ignored through the host's path
    info = httpx.get(f"{server.base}/v1/sandbox", timeout=30).json()
    assert info["workspace"]["nosuid"] is True
    assert mounted_at(workspace) is not None
    assert httpx.delete(f"{server.base}/v1/sandbox", timeout=60).status_code == 204
    assert mounted_at(workspace) is None
    assert not (workspace / "rootshell").stat().st_mode & (stat.S_ISUID | stat.S_ISGID)
    assert (workspace / "rootshell").stat().st_mode & 0o777 == 0o755
