"""Errors the host side of the sandbox raises, each with a stable code and the HTTP status it suggests.

    SandboxError                      code, status (base of everything below)
    ├── SandboxBackendUnavailable     SANDBOX_BACKEND_UNAVAILABLE  503  engine unreachable / past a deadline
    ├── SandboxImageUnavailable       SANDBOX_IMAGE_UNAVAILABLE    503  the sandbox image is missing
    ├── SandboxCapacity               SANDBOX_CAPACITY             503  every container slot is busy
    │                                                                   (retry_after_s)
    ├── SandboxDiskFull               SANDBOX_DISK_FULL            503  a new workspace's quota image would
    │                                                                   eat the data disk's reserve
    ├── SandboxStartFailed            SANDBOX_START_FAILED         503  container or runner did not start
    │   └── SandboxPolicyNotEnforced  SANDBOX_POLICY_NOT_ENFORCED  503  the engine did not apply a hardening
    │                                                                   setting (container removed unused)
    ├── ToolDenied                    TOOL_DENIED                  403  the tenant's policy forbids the tool
    ├── TooManyCalls                  TOO_MANY_CALLS               429  concurrent-call cap (retry_after_s)
    └── InvalidTenant                 INVALID_TENANT_ID            400  tenant id unusable as a directory

Failures *inside* a call (the runner died, OOM, timeout) are not exceptions: they come back as a
``ToolResult`` whose ``error.code`` is e.g. ``SANDBOX_DIED``, ``SANDBOX_UNRESPONSIVE`` (the runner stopped
answering pings; its container was removed) or ``OOM_KILLED``, so the audit log records them like any result
and the HTTP answer is the result itself (200), not an error status. The server's edge maps a
``SandboxError`` to its HTTP body with ``code``, ``message`` and ``status``.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base of the toolrunner's host-side errors."""

    code: str = "INTERNAL"
    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SandboxBackendUnavailable(SandboxError):
    """The container engine did not answer in time, or not at all."""

    code = "SANDBOX_BACKEND_UNAVAILABLE"
    status = 503


class SandboxImageUnavailable(SandboxError):
    """The sandbox image is not present (build it with ``openanalyst sandbox build``)."""

    code = "SANDBOX_IMAGE_UNAVAILABLE"
    status = 503


class SandboxCapacity(SandboxError):
    """The host runs its maximum of live containers and none of them is idle enough to be stopped."""

    code = "SANDBOX_CAPACITY"
    status = 503

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SandboxDiskFull(SandboxError):
    """A new tenant's quota image, filled, would leave the data disk less free space than its reserve."""

    code = "SANDBOX_DISK_FULL"
    status = 503


class SandboxStartFailed(SandboxError):
    """The container was created but the runner inside it never said hello."""

    code = "SANDBOX_START_FAILED"
    status = 503


class SandboxPolicyNotEnforced(SandboxStartFailed):
    """``docker inspect`` shows a setting other than the one asked for; the container is never used."""

    code = "SANDBOX_POLICY_NOT_ENFORCED"


class ToolDenied(SandboxError, PermissionError):
    """The tenant's policy does not allow this tool."""

    code = "TOOL_DENIED"
    status = 403


class TooManyCalls(SandboxError):
    """The tenant already has its policy's maximum number of calls in flight."""

    code = "TOO_MANY_CALLS"
    status = 429

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidTenant(SandboxError, ValueError):
    """A tenant id that is not safe to use as a directory and label value."""

    code = "INVALID_TENANT_ID"
    status = 400
