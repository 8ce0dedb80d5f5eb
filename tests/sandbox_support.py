"""Fixtures for tests against the real Docker engine: one SandboxManager per test module, driven from a
private event loop thread so that synchronous tests can share it (module scope) and every wait has a deadline.

Every container is labelled ``openanalyst.test=1`` and a per-module server id; teardown removes exactly those.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from policies.loader import policy_for
from policies.model import Policy
from toolrunner.config import SandboxConfig
from toolrunner.docker_backend import DockerBackend
from toolrunner.engine_set import runtime_for
from toolrunner.engines import EngineAddress
from toolrunner.manager import CallOutcome, SandboxManager
from toolrunner.quota import release_all
from toolrunner.runtime import ContainerRuntime

T = TypeVar("T")


def ok(outcome: Any) -> str:
    """The output of a call that must have succeeded."""
    assert outcome.result.error is None, outcome.result
    return str(outcome.result.output)


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Harness:
    """A SandboxManager living on its own event loop thread, with blocking, deadline-bounded helpers."""

    def __init__(self, config: SandboxConfig, policies: dict[str, Policy] | None = None,
                 default_policy: str = "ci", engine: EngineAddress | None = None) -> None:
        self.config = config
        self.engine = engine  # None: the engine the environment names (the main one)
        self.policies = dict(policies or {})
        self.default_policy = policy_for(default_policy)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="manager-loop", daemon=True)
        self._thread.start()
        self.manager: SandboxManager = self.run(self._make())

    async def _make(self) -> SandboxManager:
        backend: ContainerRuntime = (  # closed after the sweep
            runtime_for(self.config.docker_hosts, self.config.docker_timeout_s) if self.config.docker_hosts
            else DockerBackend(timeout_s=self.config.docker_timeout_s, engine=self.engine))
        return SandboxManager(self.config, self.policy, backend=backend)

    def policy(self, tenant: str) -> Policy:
        return self.policies.get(tenant, self.default_policy)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the manager's loop and wait for it, at most ``timeout`` seconds."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Start a coroutine on the manager's loop without waiting for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, tenant: str, tool: str, input: dict[str, Any], *, session: str = "s1",
             timeout_s: float | None = None, wait: float = 90) -> CallOutcome:
        return self.run(self.manager.call(tenant, session, tool, input, timeout_s=timeout_s), wait)

    def bash(self, tenant: str, command: str, **kw: Any) -> CallOutcome:
        return self.call(tenant, "bash", {"command": command}, **kw)

    def close(self) -> None:
        """Remove every container this harness's server id made, then stop the loop."""
        try:
            self.run(self._teardown(), 120)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    async def _teardown(self) -> None:
        await self.manager.shutdown()
        for row in await self.manager.backend.list_managed(self.config.instance_id):
            await self.manager.backend.remove(str(row["Id"]))
        self.manager.backend.close()
        await asyncio.to_thread(release_all, self.config.data_dir)  # quota mounts and their loop devices


def make_config(data_dir: Path, image: str, **overrides: Any) -> SandboxConfig:
    """A SandboxConfig for tests: a fresh server id, test labels, the owner workspace under data_dir."""
    (data_dir / "owner").mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "data_dir": data_dir, "image": image, "owner_workspace": data_dir / "owner",
        "server_id": f"test-{uuid.uuid4().hex[:10]}", "extra_labels": {"openanalyst.test": "1"},
        "idle_timeout_s": 600, "docker_timeout_s": 30,
    }
    values.update(overrides)
    return SandboxConfig(**values)


@pytest.fixture(scope="module")
def harness(sandbox_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One manager (and so one container per tenant) shared by the tests of a module."""
    h = Harness(make_config(tmp_path_factory.mktemp("sandbox-data"), sandbox_image))
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def harness_factory(sandbox_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Make extra managers (own data dir or a given one, config overrides); all are torn down at the end."""
    made: list[Harness] = []

    def make(data_dir: Path | None = None, policies: dict[str, Policy] | None = None,
             **overrides: Any) -> Harness:
        config = make_config(data_dir or tmp_path_factory.mktemp("sandbox-data"), sandbox_image, **overrides)
        made.append(Harness(config, policies))
        return made[-1]

    try:
        yield make
    finally:
        for h in reversed(made):
            h.close()
