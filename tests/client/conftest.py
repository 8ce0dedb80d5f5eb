"""Fixtures for the client tests: the real server process (``tests/e2e/server_process.py``), reached through
the installed ``openanalyst_client`` package exactly as a user would, and a loopback TCP proxy that the tests
cut to drop a stream mid-way."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))  # server_process, agent_support

from agent_support import remove_server_containers
from server_process import PROVIDER_VARS, ServerProcess, account, fake, free_port, openanalyst_cmd, serve

__all__ = ["account", "fake", "openanalyst_cmd", "serve", "serve_module"]


@pytest.fixture(scope="module")
def serve_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """One server for a module whose tests only read (the contract test): no tool calls, no containers."""
    started: list[ServerProcess] = []

    def start() -> ServerProcess:
        if not started:
            base = tmp_path_factory.mktemp("client-contract")
            (base / "workspace").mkdir()
            env = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARS and not k.startswith("OPENANALYST_")}
            env |= {"OPENANALYST_DATA_DIR": str(base / "data"), "OPENANALYST_LOG_LEVEL": "warning",
                    "PYTHONUNBUFFERED": "1", "OPENANALYST_OWNER_WORKSPACE": str(base / "workspace")}
            server = ServerProcess(base / "data", free_port(), env, [])
            started.append(server)
            server.wait_ready()
        return started[0]

    yield start
    for server in started:
        assert server.stop() == 0
    client = docker.from_env(timeout=60)
    try:  # it runs no tool calls, but whatever it made is removed like the serve fixture's
        for server in started:
            remove_server_containers(client, server.data_dir)
    finally:
        client.close()
