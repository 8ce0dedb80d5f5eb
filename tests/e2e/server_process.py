"""Start ``openanalyst --serve PORT`` as a real process (temp data dir, free port) and wait for /health.

``serve()`` returns a ``ServerProcess``; every process started is stopped with SIGTERM at teardown and must
exit 0. Readiness is a poll of /health against a deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import httpx
import pytest
from agent_support import remove_server_containers
from fakes.account import FakeAccountService
from fakes.anthropic import FakeAnthropic

from toolrunner.quota import release_all

PROVIDER_VARS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "XAI_API_KEY",
                 "OPENROUTER_API_KEY", "OPENANALYST_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_BEARER_TOKEN_BEDROCK", "AWS_SESSION_TOKEN", "OLLAMA_HOST")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def openanalyst_command() -> list[str]:
    script = Path(sys.executable).parent / "openanalyst"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server"]


class ServerProcess:
    """A running server (``openanalyst --serve`` unless ``command`` says otherwise); ``output`` collects its
    stdout+stderr lines as they come."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str], args: list[str],
                 cwd: Path | None = None, command: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.output: list[str] = []
        command = command or [*openanalyst_command(), "--serve", str(port), *args]
        self.proc = subprocess.Popen(command, env=env, cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n" + "\n".join(self.output))
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # poll interval of a readiness check, not a synchronisation sleep
        raise AssertionError("server not ready in time:\n" + "\n".join(self.output))

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code (the tests expect 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self._reader.join(timeout=5)
            raise AssertionError(f"server did not stop within {timeout:.0f} s of SIGTERM; its last output:\n"
                                 + "\n".join(self.output[-40:])) from None
        self._reader.join(timeout=5)
        return code


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``serve(env={…}, args=[…], data_dir=…)`` starts a server and waits until it answers /health;
    ``command=lambda port: [...]`` runs another argv (``uvicorn --factory``) in the same environment."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None,
              data_dir: Path | None = None, port: int | None = None, cwd: Path | None = None,
              command: Callable[[int], list[str]] | None = None) -> ServerProcess:
        data = data_dir or tmp_path / "data"
        (tmp_path / "workspace").mkdir(exist_ok=True)
        base_env = {k: v for k, v in os.environ.items()
                    if k not in PROVIDER_VARS and not k.startswith("OPENANALYST_")}
        base_env |= {"OPENANALYST_DATA_DIR": str(data), "OPENANALYST_LOG_LEVEL": "warning",
                     "PYTHONUNBUFFERED": "1", "OPENANALYST_SANDBOX_LABELS": '{"openanalyst.test": "1"}',
                     "OPENANALYST_OWNER_WORKSPACE": str(tmp_path / "workspace")}
        port = port or free_port()
        server = ServerProcess(data, port, base_env | (env or {}), args or [], cwd,
                               command=None if command is None else command(port))
        started.append(server)
        server.wait_ready(timeout=60)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop()
    # Servers leave their tenants' containers running for adoption by design (and creating a session
    # prestarts one): remove what each of them made, one at a time.
    client = docker.from_env(timeout=60)
    try:
        for server in started:
            remove_server_containers(client, server.data_dir)
    finally:
        client.close()
        release_all(tmp_path)  # the owner workspace's nosuid guard, any quota mount left


@pytest.fixture
def openanalyst_cmd() -> list[str]:
    """The argv prefix that runs the ``openanalyst`` console script (conftest modules are not importable)."""
    return openanalyst_command()


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    """A fake Anthropic on loopback (real HTTP), for ``server_env(fake.base_url, …)``; script its replies."""
    with FakeAnthropic() as anthropic:
        yield anthropic


@pytest.fixture
def account() -> Iterator[FakeAccountService]:
    """A fake account service on loopback (real HTTP), for ``OPENANALYST_ACCOUNT_SERVICE_URL``."""
    with FakeAccountService() as service:
        yield service
