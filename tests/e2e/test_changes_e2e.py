"""Change reports through the real server and engine: a call's created, modified and deleted files with their
hashes, a background process's writes during a later call and between calls, the audit record of a report,
and a policy that turns reports off."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import ServerProcess

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(240)]

T = {"X-Tenant-ID": "changes-t"}
OFF = {"X-Tenant-ID": "changes-off"}
REPO = Path(__file__).resolve().parents[2]


def call(base: str, headers: dict[str, str], command: str, session: str | None = None,
         background: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"input": {"command": command} | ({"run_in_background": True} if background else {})}
    if session:
        body["session_id"] = session
    r = httpx.post(f"{base}/v1/tools/bash", headers=headers, json=body, timeout=60)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def by_path(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in answer["changes"]["files"]}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(serve: Callable[..., ServerProcess], sandbox_image: str, tmp_path: Path) -> ServerProcess:
    off = tmp_path / "noreports.toml"
    off.write_text((REPO / "policies/presets/default.toml").read_text().replace('name = "default"',
                                                                                 'name = "noreports"')
                   + "change_reports = false\n")
    return serve(env={"OPENANALYST_TENANT_POLICIES": json.dumps({"changes-off": str(off)})})


def test_created_modified_deleted_and_in_the_audit_log(server: ServerProcess) -> None:
    """A bash call's report lists what it created, modified (hash before and after) and deleted, and the
    same report is an audit record of its own."""
    first = call(server.base, T, "mkdir -p d && printf old > d/keep.txt && printf bye > del.txt")
    assert {p: f["change"] for p, f in by_path(first).items()} == {"d/keep.txt": "created", "del.txt": "created"}
    second = call(server.base, T, "printf new > d/keep.txt && rm del.txt && printf hi > a.txt && echo done")
    files = by_path(second)
    assert {p: f["change"] for p, f in files.items()} == {"d/keep.txt": "modified", "del.txt": "deleted",
                                                          "a.txt": "created"}
    assert files["d/keep.txt"]["sha256_before"] == sha(b"old") and files["d/keep.txt"]["sha256"] == sha(b"new")
    assert files["del.txt"]["size_before"] == 3 and files["del.txt"]["sha256"] is None
    assert files["a.txt"]["size"] == 2 and not files["a.txt"]["overlapping"]
    assert second["changes"]["total"] == 3 and second["changes"]["truncated"] is False
    untouched = call(server.base, T, "cat d/keep.txt")
    assert untouched["changes"] == {"files": [], "total": 0, "truncated": False, "note": None}

    records = httpx.get(f"{server.base}/v1/audit", headers=T, params={"tool": "changes", "per_page": 100},
                        timeout=30).json()["data"]
    reports = [json.loads(r["output"]) for r in records if r["phase"] == "finished"]
    assert second["changes"] in reports
    started = [r for r in records if r["phase"] == "started" and r["call_id"] == second["call_id"] + ".changes"]
    assert started and started[0]["input"]["call_id"] == second["call_id"]


def test_background_processes_during_a_call_and_between_calls(server: ServerProcess) -> None:
    """A background process's write lands in the report of the call that was running when it wrote; one made
    while no call ran comes with the next call, marked between_calls."""
    session = httpx.post(f"{server.base}/sessions", headers=T, timeout=30).json()["session_id"]
    started = call(server.base, T, "while [ ! -e go ]; do sleep 0.01; done; printf bg > bg.txt", session,
                   background=True)
    assert started["error"] is None, started
    during = call(server.base, T, "touch go; while [ ! -e bg.txt ]; do sleep 0.01; done; echo seen", session)
    assert during["output"].strip().endswith("seen")
    files = by_path(during)
    assert files["bg.txt"]["change"] == "created" and not files["bg.txt"]["between_calls"]
    assert files["go"]["change"] == "created"

    # The write waits for a marker uploaded after the call has answered, so it happens while no call runs (a
    # plain background printf could land before its own call answered, and be that call's change).
    late = call(server.base, T, "while [ ! -e go2 ]; do sleep 0.01; done; printf late > late.txt", session,
                background=True)
    assert late["error"] is None
    assert "late.txt" not in by_path(late)
    assert httpx.put(f"{server.base}/v1/files/go2", headers=T, content=b"", timeout=30).status_code == 200
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.base}/v1/files/late.txt", headers=T, timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the background write never happened"
        time.sleep(0.05)  # poll interval against the deadline
    nxt = call(server.base, T, "true", session)
    files = by_path(nxt)
    assert files["late.txt"]["change"] == "created" and files["late.txt"]["between_calls"] is True
    assert files["late.txt"]["sha256"] == sha(b"late")


def test_uploads_are_not_reported_as_background_changes(server: ServerProcess) -> None:
    """A file PUT through the files API is that request's change (counted in its audit record), not a
    between-calls change in the next tool call's report."""
    assert httpx.put(f"{server.base}/v1/files/up.bin", headers=T, content=b"\x00up", timeout=30).status_code == 200
    after = call(server.base, T, "cat up.bin > /dev/null")
    assert after["changes"]["files"] == [], after["changes"]
    records = httpx.get(f"{server.base}/v1/audit", headers=T, params={"tool": "files.put"}, timeout=30).json()
    finished = [r for r in records["data"] if r["phase"] == "finished"]
    assert json.loads(finished[0]["output"])["changed_files"] == 1


def test_a_policy_turns_reports_off(server: ServerProcess) -> None:
    """Under change_reports = false the result has no report and no changes record is written."""
    answer = call(server.base, OFF, "printf x > x.txt")
    assert answer["changes"] is None and answer["exit_code"] == 0
    records = httpx.get(f"{server.base}/v1/audit", headers=OFF, params={"tool": "changes"}, timeout=30).json()
    assert records["data"] == []
