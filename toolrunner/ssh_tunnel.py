"""An SSH engine, made local: ``ssh -L`` forwards a unix socket of ours to the engine's socket over there.

Both halves of the conversation with the engine — docker-py's requests and the runner's attach stream — then
go through one ordinary unix socket, so the TLS-free, key-only security of SSH carries everything and no code
path differs from a local engine's. OpenSSH does the work: it runs as a control master (``-M -S``) that forks
into the background only once it is authenticated and the forward is bound (``-f`` with
``ExitOnForwardFailure``), so "started" means "usable", with no polling; ``-O check`` and ``-O exit`` ask the
master whether it lives and stop it. Keys only (``BatchMode``): a prompt could never be answered and would
hang a call. An operator gives ssh its identity and known hosts in an ssh config file
(``OPENANALYST_SSH_CONFIG``) or the service user's ``~/.ssh/config``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

REMOTE_SOCKET = "/var/run/docker.sock"
START_TIMEOUT_S = 30.0


class TunnelFailed(ConnectionError):
    """ssh could not open the forward; the message carries ssh's own words."""


class SshTunnel:
    """One forward to one engine; ``socket()`` (re)opens it when needed and returns the local socket path."""

    def __init__(self, ssh_argv: list[str], *, remote_socket: str = REMOTE_SOCKET) -> None:
        self._argv = ssh_argv  # ends with "--", host
        self._remote = remote_socket
        self._dir = Path(tempfile.mkdtemp(prefix="oa-ssh-"))  # 0700; short, for the unix socket length limit
        self._lock = threading.Lock()
        self._open = False

    @property
    def local_socket(self) -> Path:
        return self._dir / "docker.sock"

    @property
    def _control(self) -> Path:
        return self._dir / "control"

    def socket(self) -> Path:
        """The local end of the forward, started now if it is not running."""
        with self._lock:
            if not (self._open and self._alive()):
                self._start()
            return self.local_socket

    def _control_command(self, operation: str) -> list[str]:
        """``ssh … -S CONTROL -O operation -- host``: the operation must come before ``--``, or ssh would send
        it to the host as a remote command (and a check would never see the master, nor an exit stop it)."""
        head, host = self._argv[:-2], self._argv[-2:]
        return [*head, "-S", str(self._control), "-O", operation, *host]

    def _alive(self) -> bool:
        check = subprocess.run(self._control_command("check"), capture_output=True, timeout=10, check=False)
        return check.returncode == 0

    def _start(self) -> None:
        self.local_socket.unlink(missing_ok=True)
        self._control.unlink(missing_ok=True)
        head, host = self._argv[:-2], self._argv[-2:]
        argv = [*head, "-f", "-N", "-M", "-S", str(self._control), "-o", "ExitOnForwardFailure=yes",
                "-o", "StreamLocalBindUnlink=yes", "-o", "StreamLocalBindMask=0177",
                "-L", f"{self.local_socket}:{self._remote}", *host]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=START_TIMEOUT_S, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise TunnelFailed(f"ssh to {host[-1]} did not set up the forward within {START_TIMEOUT_S:.0f} s") from exc
        if done.returncode != 0:
            words = done.stderr.decode("utf-8", "replace").strip()[-500:]
            raise TunnelFailed(f"ssh to {host[-1]} failed ({done.returncode}): {words or 'no message'}")
        self._open = True

    def close(self) -> None:
        """Stop the master (and with it the forward) and remove our directory."""
        with self._lock:
            if self._open:
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    subprocess.run(self._control_command("exit"), capture_output=True, timeout=10, check=False)
                self._open = False
            shutil.rmtree(self._dir, ignore_errors=True)
