"""Helpers for the agent end-to-end tests: an SSE reader, a server wired to a fake provider, container
cleanup by the server's label, and a workspace the sandbox user can write."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from toolrunner.quota import release_all

SANDBOX_UID = 1000
TEST_KEY = "sk-ant-test-0123456789abcdefSECRET"


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """(event type, data, id) for each event of an SSE stream, skipping comments."""
    kind, data, event_id = "message", [], None
    for line in lines:
        if line == "":
            if data:
                yield kind, json.loads("\n".join(data)), event_id
            kind, data, event_id = "message", [], None
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif line.startswith("id:"):
            event_id = line[3:].strip()


def read_until_idle(response: httpx.Response, stop: Callable[[str, dict[str, Any]], bool] | None = None
                    ) -> list[tuple[str, dict[str, Any], str | None]]:
    """Events of a streamed response up to the turn's final `state: idle` (a sub-agent's idle is tagged)."""
    events = []
    for kind, data, event_id in parse_sse(response.iter_lines()):
        events.append((kind, data, event_id))
        if stop is not None and stop(kind, data):
            break
        if kind == "state" and data.get("state") == "idle" and "parent_tool_call_id" not in data:
            break
    return events


def sandbox_workspace(path: Path) -> Path:
    """A directory the container's unprivileged user owns (the owner's workspace in these tests)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, SANDBOX_UID, SANDBOX_UID)
    return path


def server_env(fake_base_url: str, owner_workspace: Path, **extra: str) -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": TEST_KEY, "ANTHROPIC_BASE_URL": fake_base_url,
            "OPENANALYST_OWNER_WORKSPACE": str(owner_workspace),
            "OPENANALYST_SANDBOX_LABELS": json.dumps({"openanalyst.test": "1"}), **extra}


def server_label(data_dir: Path) -> str:
    """The `openanalyst.server` label value a server with this data directory puts on its containers."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


def remove_server_containers(docker_client: Any, data_dir: Path) -> None:
    """Remove, one at a time (the engine's removal bug), every container this test's server made."""
    label = f"openanalyst.server={server_label(data_dir)}"
    for container in docker_client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)
    release_all(data_dir)  # the tenants' quota filesystems: unmounted, their loop devices freed
