"""The dispatcher records calls refused before they run, and counts server-side tools toward the call cap.

The audit sink here is a recorder honouring the dispatcher's ``AuditSink`` contract (the real AuditLog is
covered by test_audit_dispatch and the e2e suite); the server-side tools and the registry are the real ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest

from policies.loader import load_policy
from server.errors import ApiError, TooManyRequests
from server.tools.builtin import default_registry
from server.tools.context import ToolContext
from server.tools.dispatch import ToolDispatcher
from toolrunner.manager import CallOutcome

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingAudit:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def started(self, tenant_id: str, **fields: Any) -> int:
        self.records.append({"phase": "started", "tenant": tenant_id, **fields})
        return len(self.records)

    async def finished(self, tenant_id: str, **fields: Any) -> int:
        self.records.append({"phase": "finished", "tenant": tenant_id, **fields})
        return len(self.records)


class NoSandbox:
    async def run(self, *args: Any, **kwargs: Any) -> CallOutcome:
        raise AssertionError("no sandbox tool is called here")

    async def close_session(self, tenant_id: str, session_id: str) -> None:
        return None


def dispatcher(max_calls: int = 8) -> tuple[ToolDispatcher, RecordingAudit]:
    policy = load_policy("default").model_copy(update={"max_concurrent_calls": max_calls})
    audit = RecordingAudit()
    return ToolDispatcher(default_registry(), NoSandbox(), audit, lambda tenant: policy), audit


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("name", "raw", "code"), [
    ("sleep", {"seconds": "soon"}, "INVALID_TOOL_INPUT"),
    ("sleep", ["not", "an", "object"], "INVALID_TOOL_INPUT"),
    ("structured_output", deep(5000), "JSON_TOO_DEEP"),
    ("no_such_tool" * 50, {}, "TOOL_NOT_FOUND"),
])
async def test_a_refused_call_is_recorded_with_its_code(name: str, raw: Any, code: str) -> None:
    """Unknown tool, bad or too-deep input: a started record with a shallow copy and a hash, then a finished
    record with the real error code; the caller still gets the domain error."""
    d, audit = dispatcher()
    with pytest.raises(ApiError) as caught:
        await d.run(ToolContext(tenant_id="t1", session_id=None), name, raw, raw_sha256=None)
    assert caught.value.code == code
    started, finished = audit.records
    assert (started["phase"], started["decision"], finished["decision"]) == ("started", "denied", "denied")
    assert started["call_id"] == finished["call_id"] and started["call_id"]
    assert len(started["tool"]) <= 200
    json.dumps(started["input"])  # shallow enough for any recursive reader
    assert len(json.dumps(started["input"])) < 20_000
    assert len(started["input"]["raw_sha256"]) == 64
    assert finished["result"]["error"]["code"] == code


async def test_the_raw_request_hash_is_kept_when_given() -> None:
    """A call that came over HTTP keeps the sha256 of the request body the route computed."""
    d, audit = dispatcher()
    body_hash = hashlib.sha256(b'{"input": {"seconds": -1}}').hexdigest()
    with pytest.raises(ApiError):
        await d.run(ToolContext(tenant_id="t1", session_id=None), "sleep", {"seconds": -1}, raw_sha256=body_hash)
    assert audit.records[0]["input"]["raw_sha256"] == body_hash


async def test_server_side_tools_fill_the_call_cap() -> None:
    """With a cap of 2, two running `sleep` calls make a third one TOO_MANY_CALLS (recorded); after they end
    a new call runs again."""
    d, audit = dispatcher(max_calls=2)
    ctx = ToolContext(tenant_id="t1", session_id=None)
    running = [asyncio.create_task(d.run(ToolContext(tenant_id="t1", session_id=None), "sleep", {"seconds": 0.5}))
               for _ in range(2)]
    deadline = asyncio.get_running_loop().time() + 5
    while sum(r["phase"] == "started" for r in audit.records) < 2:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)
    with pytest.raises(TooManyRequests) as caught:
        await d.run(ctx, "sleep", {"seconds": 0.01})
    assert caught.value.code == "TOO_MANY_CALLS"
    assert audit.records[-1]["result"]["error"]["code"] == "TOO_MANY_CALLS"
    await asyncio.gather(*running)
    other = await d.run(ToolContext(tenant_id="t2", session_id=None), "sleep", {"seconds": 0.01})
    again = await d.run(ctx, "sleep", {"seconds": 0.01})
    assert other.error is None and again.error is None
