"""A second, private Docker engine for tests that stop and restart "the engine" (never the main one).

Set up exactly as /work/shared/DOCKER_NOTES.md ("A second engine on the same machine") says: its own empty
config file (the main engine's daemon.json sets data-root), socket, data and exec roots, pid file, and its own
bridge interface made first (never ``--bridge none``, which deletes the main engine's docker0), no iptables.
It is stopped by its pid file; ``close`` stops it, removes its bridge and its directory. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _free_subnet() -> str:
    """A 172.31.x.1/24 address no interface of this machine uses."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for _ in range(50):
        prefix = f"172.31.{random.randint(200, 239)}."
        if prefix not in used:
            return prefix + "1/24"
    raise AssertionError("no free 172.31.200-239.0/24 subnet for the second engine's bridge")


class SecondEngine:
    """One dockerd on a private socket; ``start``/``stop`` may be called again and again."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="oa-eng-", dir="/tmp"))
        self.bridge = f"oae{os.getpid() % 100000}"
        self.socket = self.dir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.pidfile = self.dir / "docker.pid"
        (self.dir / "empty.json").write_text("{}")
        self._log = open(self.dir / "dockerd.log", "ab")  # noqa: SIM115 - kept open while dockerd runs
        self.proc: subprocess.Popen[bytes] | None = None
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", _free_subnet(), "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")

    def start(self, timeout: float = 60) -> None:
        """Start dockerd and wait until it answers a ping."""
        self.proc = subprocess.Popen(
            ["dockerd", "--config-file", str(self.dir / "empty.json"), "--host", self.host,
             "--data-root", str(self.dir / "data"), "--exec-root", str(self.dir / "exec"),
             "--pidfile", str(self.pidfile), "--bridge", self.bridge, "--iptables=false", "--ip-masq=false"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the second engine did not start:\n{self.log_tail()}")
            time.sleep(0.2)  # poll interval of a readiness check

    def answers(self) -> bool:
        try:
            client = docker.DockerClient(base_url=self.host, timeout=5, version="1.41")
        except docker.errors.DockerException:
            return False
        try:
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=120, version="1.41")

    def load(self, image: str) -> None:
        """Copy an image from the main engine: ``docker save IMAGE | DOCKER_HOST=… docker load``."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        try:
            subprocess.run(["docker", "load", "-q"], stdin=save.stdout, check=True, capture_output=True,
                           timeout=180, env={**os.environ, "DOCKER_HOST": self.host})
        finally:
            assert save.stdout is not None
            save.stdout.close()
            assert save.wait(60) == 0

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM the daemon named by its pid file and wait until it has exited."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pid = int(self.pidfile.read_text().strip())
        assert pid == self.proc.pid, (pid, self.proc.pid)  # never signal anything but our own daemon
        os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the second engine did not stop within {timeout:.0f} s:\n"
                                 f"{self.log_tail()}") from None

    def log_tail(self, n: int = 3000) -> str:
        return (self.dir / "dockerd.log").read_bytes()[-n:].decode("utf-8", "replace")

    def close(self) -> None:
        """Stop the daemon, then remove its bridge, whatever it left mounted, and its directory."""
        try:
            self.stop()
        finally:
            self._log.close()
            with contextlib.suppress(subprocess.SubprocessError):
                _run("ip", "link", "delete", self.bridge)
            mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                      if line.split()[1].startswith(str(self.dir))]
            for mount in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30, check=False)
            shutil.rmtree(self.dir, ignore_errors=True)
