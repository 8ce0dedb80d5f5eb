"""``FilesService``: the tenant's mounted workspace, who its new files belong to, its caps, and the audit.

Before any operation the tenant's sandbox is started through the manager (``ensure_started``, its one locked
path that mounts the quota filesystem), so the host never reads the bare mount point of an unmounted image
nor writes past the quota. Every request is recorded like a tool call (``files.put`` …): a ``started`` record
with the path, a ``finished`` one with a JSON summary (bytes, SHA-256, entries skipped) and the error code.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from policies.model import Policy
from server.changes.tracker import ChangeTracker
from server.errors import ApiError
from server.files.errors import FilesError
from server.files.identity import Identity
from server.files.safepath import Root, parts_of
from server.tools.dispatch import new_call_id
from server.tools.sandbox_backend import api_error
from toolrunner.config import owner_tools_identity, workspace_path
from toolrunner.errors import SandboxError


@dataclass
class Audited:
    """What one request did, filled in by the route as it goes; written as the ``finished`` record."""

    summary: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, str] | None = None


class FilesService:
    def __init__(self, sandbox_backend: Any, audit: Any, policy_for: Callable[[str], Policy]) -> None:
        self._sandbox = sandbox_backend
        self._audit = audit
        self.policy_for = policy_for
        self.changes: ChangeTracker | None = None  # set by server.wiring: uploads are not background changes

    async def open(self, tenant: str) -> tuple[Root, Identity]:
        """The tenant's workspace root (mounted) and the identity new files get; the caller closes the root."""
        manager = await self._sandbox.manager()
        try:
            await manager.ensure_started(tenant)
        except SandboxError as exc:
            raise api_error(exc) from None
        config = manager.config
        path = workspace_path(config, tenant)
        root = await asyncio.to_thread(Root.open, str(path))
        if tenant != config.owner_tenant_id:
            return root, Identity(config.sandbox_uid, config.sandbox_gid, True)
        uid, gid, _ = owner_tools_identity(config, path.stat())
        return root, Identity(uid, gid, False)

    @asynccontextmanager
    async def audited(self, tenant: str, op: str, input: dict[str, Any]) -> AsyncIterator[Audited]:
        """Record the request before it runs and how it ended after (even when the client went away)."""
        call_id, tool = new_call_id(), f"files.{op}"
        policy = self.policy_for(tenant).name
        started = time.monotonic()
        await self._audit.started(tenant, call_id=call_id, session_id=None, tool=tool, input=input, policy=policy,
                                  decision="allowed")
        rec = Audited()
        try:
            if self.changes is None or op not in ("put", "delete"):
                yield rec
            else:
                async with self.changes.absorbing(tenant, call_id, _owned(input.get("path"))) as changed:
                    yield rec
                rec.summary["changed_files"] = len(changed)
        except FilesError as exc:
            rec.error = (exc.code, exc.message)
            raise
        except ApiError as exc:
            rec.error = (exc.code, exc.message)
            raise
        except BaseException:
            rec.error = rec.error or ("CANCELLED", "the request did not finish")
            raise
        finally:
            result = {"tool_name": tool, "output": json.dumps(rec.summary, sort_keys=True), "exit_code": None,
                      "duration_ms": round((time.monotonic() - started) * 1000, 3), "truncated": False,
                      "timed_out": False, "limit": None,
                      "error": None if rec.error is None else {"code": rec.error[0], "message": rec.error[1]}}
            await asyncio.shield(self._audit.finished(tenant, call_id=call_id, session_id=None, tool=tool,
                                                      result=result, oom_killed=False, container_id=None,
                                                      image_id=None, policy=policy, decision="allowed"))


def _owned(path: object) -> str | None:
    """The workspace path a put or delete writes (None when it names none: such a request writes nothing)."""
    if not isinstance(path, str):
        return None
    try:
        return "/".join(parts_of(path))
    except FilesError:
        return None


__all__ = ["Audited", "FilesService"]
