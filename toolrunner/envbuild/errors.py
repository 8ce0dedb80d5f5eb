"""Errors of environment builds, each a ``SandboxError`` with a stable code (the server maps them once).

    SandboxError
    ├── EnvironmentInvalid        ENVIRONMENT_INVALID         422  a name, package spec or fragment refused
    ├── EnvironmentBuildFailed    ENVIRONMENT_BUILD_FAILED    409  fetching or building failed; the message
    │                                                              carries the tool's or engine's own text
    ├── EnvironmentHardeningLost  ENVIRONMENT_BUILD_FAILED    409  the built image lost part of the base's
    │                                                              hardening; it was deleted
    └── EnvironmentBusy           SANDBOX_ENVIRONMENT_BUSY    409  the tenant's container runs another
                                                                   environment with calls in flight (retry)
"""

from __future__ import annotations

from toolrunner.errors import SandboxError

ERROR_TEXT_MAX = 4000  # the build's own error is kept, bounded: the tail, where the cause usually is


def tail(text: str, limit: int = ERROR_TEXT_MAX) -> str:
    """The last ``limit`` characters of a tool's output, marked when cut."""
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


class EnvironmentInvalid(SandboxError, ValueError):
    """The definition breaks a rule of ``spec.py``; nothing was fetched or built."""

    code = "ENVIRONMENT_INVALID"
    status = 422


class EnvironmentBuildFailed(SandboxError):
    """Fetching the packages or building the image failed; the message ends with the failing step's output."""

    code = "ENVIRONMENT_BUILD_FAILED"
    status = 409


class EnvironmentHardeningLost(EnvironmentBuildFailed):
    """The image was built but no longer keeps the base's hardening (docs/environments.md); it was removed."""


class EnvironmentBusy(SandboxError):
    """The tenant's container runs another environment and has calls in flight: it cannot be replaced now."""

    code = "SANDBOX_ENVIRONMENT_BUSY"
    status = 409

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
