"""A running sandbox whose image the engine lost: SANDBOX_IMAGE_UNAVAILABLE to the caller, then a re-check of
the image at most every RETRY_BRING_UP_S, so one rebuilt meanwhile is noticed without a restart."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from policies.loader import policy_for
from server.errors import ApiError
from server.tools.sandbox_backend import RETRY_BRING_UP_S, SandboxBackend
from toolrunner.errors import SandboxImageUnavailable

pytestmark = pytest.mark.anyio


class LostImageManager:
    """Honours the manager's call contract for an engine that no longer has the image."""

    async def call(self, *args: Any, **kwargs: Any) -> Any:
        raise SandboxImageUnavailable("sandbox image missing: No such image: openanalyst/sandbox:0123456789ab")

    async def shutdown(self) -> None:
        return None


async def test_lost_image_is_rechecked_at_most_once_per_interval() -> None:
    """Two failing calls in a row start one re-check (the image provider is asked once), which marks the image
    ready again; the status said 'missing' with the engine's reason in between."""
    asked: list[float] = []

    def ensure_image() -> str:
        asked.append(time.monotonic())
        return "openanalyst/sandbox:0123456789ab"

    def no_config(tag: str) -> Any:
        raise AssertionError("not built here")

    backend = SandboxBackend(no_config, ensure_image, lambda tenant: policy_for("default"))
    backend._manager = LostImageManager()  # type: ignore[assignment]  # a sandbox that came up earlier
    backend._ready = asyncio.create_task(asyncio.sleep(0))
    await backend._ready
    try:
        for _ in range(2):
            with pytest.raises(ApiError) as lost:
                await backend.run("t1", "s1", "bash", {"command": "true"}, timeout_s=None, on_chunk=None)
            assert lost.value.code == "SANDBOX_IMAGE_UNAVAILABLE" and lost.value.status == 503
        assert backend.image_status.state in ("missing", "checking", "ready")
        deadline = time.monotonic() + 10
        while backend.image_status.state != "ready":
            assert time.monotonic() < deadline, backend.image_status.snapshot()
            await asyncio.sleep(0.01)  # poll interval against the deadline
        assert len(asked) == 1 and RETRY_BRING_UP_S > 0
        assert backend.image_status.snapshot()["tag"] == "openanalyst/sandbox:0123456789ab"
    finally:
        await backend.close()
