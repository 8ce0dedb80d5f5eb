"""Concurrent HTTP tool calls past the tenant's cap: every answer, 429s and refusals included, has its audit
records, and they are durable before the answer (a server killed with SIGKILL right after the last answer
still has them when it comes back); docs/speed.md, "HTTP path"."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(240)]

PRESET = Path(__file__).resolve().parents[2] / "policies" / "presets" / "default.toml"
DAVE = {"X-Tenant-ID": "dave"}
# 30 runnable calls against a cap of 2, plus denials and refusals before running, all at once.
CALLS = ([("bash", {"command": "true"})] * 30 + [("javascript", {"code": "1"})] * 4
         + [("no_such_tool", {})] * 3 + [("bash", {"nope": 1})] * 3)
CODES = {403: "TOOL_DENIED", 404: "TOOL_NOT_FOUND", 422: "INVALID_TOOL_INPUT", 429: "TOO_MANY_CALLS"}


async def call_all(base: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(CALLS))
    async with httpx.AsyncClient(base_url=base, headers=DAVE, timeout=120, limits=limits) as client:
        return await asyncio.gather(*(client.post(f"/v1/tools/{tool}", json={"input": given})
                                      for tool, given in CALLS))


def all_records(base: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    page = 1
    while True:
        answer = httpx.get(f"{base}/v1/audit", headers=DAVE, params={"page": page, "per_page": 100}, timeout=30)
        answer.raise_for_status()
        records += answer.json()["data"]
        if len(records) >= answer.json()["meta"]["total"]:
            return records
        page += 1


def test_every_answer_has_durable_audit_records(serve: Callable[..., Any], sandbox_image: str,
                                                tmp_path: Path) -> None:
    """Each answered call, run, denied, refused or over the cap, has one started and one finished record with
    its outcome, and they survive a SIGKILL of the server right after the last answer."""
    policy = tmp_path / "capped.toml"  # the default preset with a cap of 2 and one tool denied
    text = re.sub(r"(?m)^max_concurrent_calls = .*$", "max_concurrent_calls = 2", PRESET.read_text())
    policy.write_text('denied_tools = ["javascript"]\n' + re.sub(r'(?m)^name = .*$', 'name = "capped"', text))
    env = {"OPENANALYST_TENANT_POLICIES": json.dumps({"dave": str(policy)})}
    data_dir = tmp_path / "data"
    server = serve(env=env, data_dir=data_dir)
    warm = httpx.post(f"{server.base}/v1/tools/bash", headers=DAVE, json={"input": {"command": "true"}}, timeout=60)
    assert warm.status_code == 200, warm.text  # the container is up: the burst measures calls, not a start

    answers = asyncio.run(call_all(server.base))
    server.proc.kill()  # no shutdown, no WAL checkpoint: only what was committed before each answer remains
    server.proc.wait(timeout=30)

    statuses = Counter(a.status_code for a in answers)
    assert statuses[429] >= 1 and statuses[200] >= 1, statuses  # the cap was really hit
    assert statuses[403] == 4 and statuses[404] == 3 and statuses[422] == 3, statuses
    assert set(statuses) <= {200, 403, 404, 422, 429}, statuses

    records = all_records(serve(env=env, data_dir=data_dir).base)
    finished = {r["call_id"]: r for r in records if r["phase"] == "finished"}
    started = [r for r in records if r["phase"] == "started"]
    assert len(finished) == len(started) == len(CALLS) + 1  # + the warm-up call
    assert not [r for r in finished.values() if r["error_code"] == "INTERRUPTED"]
    for answer in answers:
        if answer.status_code == 200:
            record = finished[answer.json()["call_id"]]
            assert record["decision"] == "allowed" and record["exit_code"] == 0 and record["error_code"] is None
    outcomes = Counter(r["error_code"] for r in finished.values())
    assert outcomes[None] == statuses[200] + 1
    for status, code in CODES.items():
        assert outcomes[code] == statuses[status], (code, outcomes, statuses)
