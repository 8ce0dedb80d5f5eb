"""The server's wait for the sandbox image, as ``GET /v1/sandbox`` shows it (``SandboxBackend.info``): the
build's progress while it runs, the failure, and an image built meanwhile noticed without a restart.

The image build itself is the one part replaced (a provider that reports progress lines and fails, then
returns the real tag): a real build takes minutes of the shared CPUs. Everything after it is real: the
manager, the engine, the tenant's sandbox info.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from policies.loader import policy_for
from server.errors import ApiError
from server.tools import sandbox_backend
from server.tools.image_status import ImageStatus
from server.tools.sandbox_backend import SandboxBackend
from toolrunner.config import SandboxConfig
from toolrunner.image import ImageUnavailable

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.timeout(120)]


class ScriptedImage:
    """Stands in for ``ensure_default_image``: reports build lines, waits to be released, then fails the first
    time (no base image here) and answers the real tag afterwards (as after ``openanalyst sandbox build``)."""

    def __init__(self, tag: str, progress: Callable[[str], None]) -> None:
        self.tag, self.progress = tag, progress
        self.release = threading.Event()
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls > 1:
            return self.tag
        self.progress("Step 1/4 : FROM openanalyst/sandbox-base")
        self.progress("Step 2/4 : RUN apt-get install -y python3")
        assert self.release.wait(30)
        raise ImageUnavailable("the base image is neither present nor pullable")


async def until(predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)  # poll interval against the deadline


async def test_build_progress_then_failure_then_image_noticed(tmp_path: Path, sandbox_image: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """While the image is built GET /v1/sandbox answers at once with state waiting_for_image and the build's
    lines; a failed build is SANDBOX_IMAGE_UNAVAILABLE with the reason; once the image exists the next call
    after the retry interval brings the sandbox up (no second build) and the info is the real one."""
    monkeypatch.setattr(sandbox_backend, "RETRY_BRING_UP_S", 0.2)
    builds: list[tuple[str, float]] = []
    status = ImageStatus(on_build=lambda outcome, seconds: builds.append((outcome, seconds)))
    image = ScriptedImage(sandbox_image, status.progress)
    config = SandboxConfig(data_dir=tmp_path / "data", image=sandbox_image, owner_workspace=tmp_path / "ws",
                           extra_labels={"openanalyst.test": "1"})
    (tmp_path / "ws").mkdir()

    def config_for(tag: str) -> SandboxConfig:
        return config.model_copy(update={"image": tag})

    backend = SandboxBackend(config_for, image, lambda tenant: policy_for("default"), image_status=status)
    try:
        backend.start()
        await until(lambda: status.state == "building", "the build to start")
        info: dict[str, Any] = await asyncio.wait_for(backend.info("t-img"), 2)  # answers without waiting
        assert info["state"] == "waiting_for_image" and info["tenant"] == "t-img"
        build = info["image_build"]
        assert build["state"] == "building" and build["elapsed_s"] >= 0
        assert build["progress"][-1] == "Step 2/4 : RUN apt-get install -y python3"

        image.release.set()
        await until(lambda: status.state == "failed", "the build to fail")
        with pytest.raises(ApiError) as failed:
            await backend.info("t-img")
        assert failed.value.code == "SANDBOX_IMAGE_UNAVAILABLE" and "neither present" in failed.value.message
        assert [outcome for outcome, _ in builds] == ["failed"]

        await asyncio.sleep(0.25)  # past the (shortened) retry interval, so the next call tries again
        info = await asyncio.wait_for(backend.info("t-img"), 60)  # retries; a check (no build) is waited for
        assert image.calls == 2 and [outcome for outcome, _ in builds] == ["failed"]  # no build the 2nd time
        assert info["image"] == sandbox_image and info["state"] == "absent"
        assert info["image_build"]["state"] == "ready" and info["image_build"]["tag"] == sandbox_image
    finally:
        await backend.close()
