"""One factory builds the app: ``uvicorn --factory server.app:build_app`` (settings from the environment) is a
working server, and the app a test builds, the CLI's and uvicorn's expose the same routes."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import PROVIDER_VARS, ServerProcess

from server.app import build_app
from server.settings import Settings


def uvicorn_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--factory", "server.app:build_app", "--host", "127.0.0.1",
            "--port", str(port)]


def server_env(tmp_path: Path) -> dict[str, str]:
    """The environment both the CLI and uvicorn read their settings from (no provider keys of the host)."""
    (tmp_path / "workspace").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARS and not k.startswith("OPENANALYST_")}
    return env | {"OPENANALYST_DATA_DIR": str(tmp_path / "data"), "OPENANALYST_LOG_LEVEL": "warning",
                  "OPENANALYST_OWNER_WORKSPACE": str(tmp_path / "workspace"), "PYTHONUNBUFFERED": "1",
                  "OPENANALYST_SANDBOX_LABELS": '{"openanalyst.test": "1"}'}


@pytest.fixture
def uvicorn_factory(serve: Callable[..., ServerProcess], sandbox_image: str) -> Callable[[], ServerProcess]:
    """Starts ``uvicorn --factory`` through ``serve`` (same environment, cleanup and container removal)."""
    return lambda: serve(command=uvicorn_command)


@pytest.mark.timeout(240)
def test_uvicorn_factory_serves_health_and_a_tool_call(uvicorn_factory: Callable[[], ServerProcess]) -> None:
    """uvicorn --factory server.app:build_app answers /health and runs a bash call in the sandbox."""
    server = uvicorn_factory()
    health = httpx.get(server.base + "/health", timeout=10).json()
    assert health["status"] == "ok"
    call = httpx.post(server.base + "/v1/tools/bash", json={"input": {"command": "echo from-$((6*7))"}},
                      timeout=180)
    assert call.status_code == 200, call.text
    assert call.json()["exit_code"] == 0 and call.json()["output"].strip() == "from-42"
    assert server.stop() == -signal.SIGTERM  # plain uvicorn re-raises the signal after its graceful shutdown


@pytest.mark.timeout(240)
def test_test_cli_and_uvicorn_apps_expose_the_same_routes(tmp_path: Path, serve: Callable[..., ServerProcess],
                                                         uvicorn_factory: Callable[[], ServerProcess],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The OpenAPI document of an app built in the test equals the CLI's and uvicorn --factory's."""
    env = server_env(tmp_path)
    for name in [k for k in os.environ if k in PROVIDER_VARS or k.startswith("OPENANALYST_")]:
        monkeypatch.delenv(name)
    built: dict[str, Any] = build_app(Settings(data_dir=tmp_path / "data",
                                               owner_workspace=tmp_path / "workspace")).openapi()
    cli = serve(env={k: v for k, v in env.items() if k.startswith("OPENANALYST_")}, data_dir=tmp_path / "data")
    from_cli = httpx.get(cli.base + "/openapi.json", timeout=10).json()
    assert cli.stop() == 0
    uvi = uvicorn_factory()
    from_uvicorn = httpx.get(uvi.base + "/openapi.json", timeout=10).json()
    assert sorted(built["paths"]) == sorted(from_cli["paths"]) == sorted(from_uvicorn["paths"])
    assert len(built["paths"]) > 30  # the whole API, not a foundation's few routes
    assert built == from_cli == from_uvicorn
