"""A real SandboxBackend on a host without the sandbox image: sandbox tools fail as they would there, server
tools run; for tests of the dispatcher and the agent loop that need no Docker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policies.model import Policy
from server.tools.sandbox_backend import SandboxBackend
from toolrunner.errors import SandboxImageUnavailable


def _no_image() -> str:
    raise SandboxImageUnavailable("no sandbox image on this host (test)")


def _no_config(tag: str) -> Any:
    raise AssertionError("the manager is never built without an image")


def imageless_backend(policy_for: Callable[[str], Policy]) -> SandboxBackend:
    return SandboxBackend(_no_config, _no_image, policy_for)
