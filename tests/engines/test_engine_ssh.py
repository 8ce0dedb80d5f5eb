"""An engine reached over SSH (a real sshd on 127.0.0.1, keys only, host key pinned): the manager's requests
and the runner's attach stream both go through the forwarded socket; a tunnel that dies is opened again for
the next container; a host key that does not match is refused, not trusted."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from engine_support import SshServer
from sandbox_support import Harness, make_config, ok

from toolrunner.docker_backend import DockerBackend
from toolrunner.engines import parse_engine
from toolrunner.errors import SandboxBackendUnavailable

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


def processes_naming(path: Path) -> list[int]:
    """Pids whose command line names ``path`` (a tunnel's master, left behind, would)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_tool_calls_run_through_an_ssh_engine(sshd: SshServer, sandbox_image: str, tmp_path: Path) -> None:
    """Calls run; after the tunnel's master is stopped, a fresh container is started through a new one."""
    engine = parse_engine("ssh://oa-engine-test", ssh_config=sshd.config)
    harness = Harness(make_config(tmp_path / "data", sandbox_image), engine=engine)
    try:
        assert ok(harness.bash("alice", "echo over-ssh")).strip() == "over-ssh"
        assert harness.bash("alice", "exit 4").result.exit_code == 4
        tunnel = harness.manager.backend._tunnel
        assert tunnel is not None and tunnel.local_socket.exists()
        stopped = subprocess.run(["ssh", "-F", str(sshd.config), "-S", str(tunnel._control), "-O", "exit",
                                  "oa-engine-test"], capture_output=True, timeout=20, check=False)
        assert stopped.returncode == 0, stopped.stderr
        harness.run(harness.manager.remove("alice"))  # the next call starts a container: attach again
        assert ok(harness.bash("alice", "echo again")).strip() == "again"
    finally:
        harness.close()
    assert processes_naming(tunnel.local_socket.parent) == [], "an ssh master outlived its backend"


def test_a_host_key_that_does_not_match_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    """StrictHostKeyChecking with the wrong pinned key: no connection, and ssh's reason in the error."""
    wrong = tmp_path / "ssh_config"
    known = tmp_path / "known_hosts"
    port = next(line.split()[1] for line in sshd.config.read_text().splitlines() if line.strip().startswith("Port"))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    kind, key = (tmp_path / "other.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{port} {kind} {key}\n")
    wrong.write_text(sshd.config.read_text().replace(str(sshd.root / "known_hosts"), str(known)))
    with pytest.raises(SandboxBackendUnavailable, match=r"(?i)host key"):
        DockerBackend(engine=parse_engine("ssh://oa-engine-test", ssh_config=wrong), timeout_s=20)


def test_docker_info_through_the_tunnel(sshd: SshServer) -> None:
    """The request half: the engine's version through the forwarded socket."""
    backend = DockerBackend(engine=parse_engine("ssh://oa-engine-test", ssh_config=sshd.config), timeout_s=20)
    try:
        client: Any = backend._client
        assert client.version()["Version"]
    finally:
        backend.close()
    assert backend._tunnel is not None and not backend._tunnel.local_socket.exists()
    assert processes_naming(backend._tunnel.local_socket.parent) == [], "the tunnel's ssh master outlived close()"
