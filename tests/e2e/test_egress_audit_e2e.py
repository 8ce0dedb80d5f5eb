"""Every egress attempt in the tenant's own audit chain, tied to its call, through the server as a real process
and the real engine: curl in a sandbox under `allowlist` reaches a fake site on the host's 127.0.0.1 (the
owner's private-target exception) and is refused a name off its list; each attempt is a `connection` record
with the call's id and session, the tool result carries the call's `network` summary, `GET /v1/audit` filters
by decision and host, a background process's connection after its call is still that call's, another tenant
never sees the records, and the chain still verifies."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.origin import serving
from test_egress_e2e import POLICY, Hello

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(240)]

ADA = {"X-Tenant-ID": "ada"}
BOB = {"X-Tenant-ID": "bob"}


@pytest.fixture
def site() -> Iterator[int]:
    with serving(Hello) as port:
        yield port


@pytest.fixture
def server(serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> Iterator[Any]:
    """ada and bob under the same allow-list (localhost only), each with its own chain."""
    policy = tmp_path / "allow.toml"
    policy.write_text(POLICY)
    started = serve(env={"OPENANALYST_TENANT_POLICIES": json.dumps({"ada": str(policy), "bob": str(policy)}),
                         "OPENANALYST_EGRESS_PRIVATE_NETWORKS": "127.0.0.1/32"})
    yield started
    if started.proc.poll() is None:
        assert started.stop() == 0


def _tool(server: Any, headers: dict[str, str], tool: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.base}/v1/tools/{tool}", headers=headers, timeout=90, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _connections(server: Any, headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.base}/v1/audit", headers=headers, timeout=30,
                         params={"phase": "connection", "per_page": "100", **params})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _until(check: Callable[[], list[dict[str, Any]]], n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The records once there are ``n`` (a connection is recorded when it ends), or what there is at the deadline."""
    deadline = time.monotonic() + timeout
    found = check()
    while len(found) < n and time.monotonic() < deadline:
        time.sleep(0.1)  # poll interval against the deadline
        found = check()
    return found


def test_each_attempt_is_a_record_of_its_call(server: Any, site: int) -> None:
    """An allowed and a denied attempt in one bash call: two connection records with that call's id and
    session, the decision, rule, address and bytes; the result's network summary counts them; the filters
    pick each one; bob sees none of ada's records and ada none of his; both chains verify."""
    session = httpx.post(f"{server.base}/sessions", headers=ADA, timeout=60).json()["session_id"]
    answer = _tool(server, ADA, "bash", session_id=session, input={"command": (
        f"curl -sS --max-time 15 http://localhost:{site}/one; echo; "
        f"curl -s -o /dev/null -w '%{{http_code}}' http://denied.example:{site}/")})
    assert answer["output"] == f"hello from the host, localhost:{site}\n403", answer
    network = answer["network"]
    assert network is not None and (network["allowed"], network["denied"]) == (1, 1), network
    assert network["hosts"] == [f"localhost:{site}"] and network["denied_hosts"] == [f"denied.example:{site}"]
    assert network["bytes_down"] > 0 and network["bytes_up"] > 0

    records = _until(lambda: _connections(server, ADA), 2)
    assert len(records) == 2, records
    by_decision = {r["decision"]: r for r in records}
    allowed, denied = by_decision["allowed"], by_decision["denied"]
    for rec in records:
        assert (rec["tenant"], rec["session_id"], rec["call_id"], rec["v"]) == ("ada", session, answer["call_id"], 2)
        assert rec["port"] == site and rec["tool"] is None
    assert (allowed["host"], allowed["address"], allowed["rule"]) == ("localhost", "127.0.0.1", "allow:localhost")
    assert allowed["bytes_down"] > 0 and allowed["reason"] is None
    assert (denied["host"], denied["rule"], denied["reason"], denied["address"]) == (
        "denied.example", "default", "default", None)

    only_denied = _connections(server, ADA, decision="denied")
    assert [r["seq"] for r in only_denied] == [denied["seq"]]
    assert [r["seq"] for r in _connections(server, ADA, host="LOCALHOST.")] == [allowed["seq"]]
    calls = httpx.get(f"{server.base}/v1/audit", headers=ADA, params={"decision": "denied"}, timeout=30).json()
    assert [r["seq"] for r in calls["data"]] == [denied["seq"]]  # no tool call was denied
    bad = httpx.get(f"{server.base}/v1/audit", headers=ADA, params={"decision": "maybe"}, timeout=30)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "INVALID_FILTER"

    bob = _tool(server, BOB, "bash", input={"command": f"curl -sS --max-time 15 http://localhost:{site}/bob"})
    assert bob["output"] == f"hello from the host, localhost:{site}" and bob["network"]["allowed"] == 1
    bobs = _until(lambda: _connections(server, BOB), 1)
    assert [(r["tenant"], r["call_id"], r["session_id"]) for r in bobs] == [("bob", bob["call_id"], None)]
    assert all(r["tenant"] == "ada" for r in _connections(server, ADA))
    for headers in (ADA, BOB):
        verdict = httpx.get(f"{server.base}/v1/audit/verify", headers=headers, timeout=30).json()
        assert verdict["ok"] is True, verdict


def test_a_background_connection_after_its_call_is_that_calls(server: Any, site: int, tmp_path: Path) -> None:
    """A background process started by one call connects after that call ended, while a later call of the
    same session runs (two FIFOs force the order): its record names the session and the call that started it
    (its process's credential), not the call running then, and neither call's network summary counts it."""
    session = httpx.post(f"{server.base}/sessions", headers=ADA, timeout=60).json()["session_id"]
    fifo = f"/tmp/oa-late-{time.monotonic_ns()}"
    made = _tool(server, ADA, "bash", session_id=session, input={"command": f"mkfifo {fifo}.go {fifo}.done"})
    assert made["exit_code"] == 0, made
    started = _tool(server, ADA, "bash", session_id=session, input={
        "command": f"read -r _ < {fifo}.go; curl -sS -o /dev/null http://localhost:{site}/late; echo $? > {fifo}.done",
        "run_in_background": True})
    assert started["error"] is None and started["network"] is None, started
    during = _tool(server, ADA, "bash", session_id=session, input={
        "command": f"echo go > {fifo}.go; read -r rc < {fifo}.done; echo $rc", "timeout_s": 60})
    assert during["output"].strip() == "0" and during["network"] is None, during
    records = _until(lambda: _connections(server, ADA, host="localhost"), 1)
    assert len(records) == 1, records
    (late,) = records
    assert (late["session_id"], late["call_id"], late["decision"]) == (session, started["call_id"], "allowed")
    assert late["call_id"] != during["call_id"]
    assert late["bytes_down"] > 0
    verdict = httpx.get(f"{server.base}/v1/audit/verify", headers=ADA, timeout=30).json()
    assert verdict["ok"] is True, verdict


def _rewrite(path: Path, text: str) -> None:
    """Replace the policy file as an editor or a config manager would: a new file renamed over the old."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    staged.replace(path)


def test_an_egress_edit_applies_to_the_next_call_and_a_mode_edit_is_refused(server: Any, site: int,
                                                                            tmp_path: Path) -> None:
    """Editing the [egress] rules of a running tenant's file takes effect at its next call (denied, audited
    under the new rule, shown by GET /v1/sandbox); an edit of network or a resource limit, or a bad rule, is
    refused with a log line that names the file and says a restart is needed, and the running rules stay."""
    policy = tmp_path / "allow.toml"
    fetch = f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 15 http://localhost:{site}/"
    assert _tool(server, ADA, "bash", input={"command": fetch})["output"] == "200"

    _rewrite(policy, POLICY.replace('allow = ["localhost"]', 'allow = ["docs.example"]'))
    denied = _tool(server, ADA, "bash", input={"command": fetch})
    assert denied["output"] == "403" and denied["network"]["denied"] == 1, denied
    records = _until(lambda: _connections(server, ADA, decision="denied"), 1)
    assert [(r["call_id"], r["rule"]) for r in records] == [(denied["call_id"], "default")]
    info = httpx.get(f"{server.base}/v1/sandbox", headers=ADA, timeout=30).json()
    assert info["egress"]["allow"] == ["docs.example"], info

    _rewrite(policy, POLICY.replace('network = "allowlist"', 'network = "open"').split("[egress]")[0])
    assert _tool(server, ADA, "bash", input={"command": fetch})["output"] == "403"  # still the edited rules
    assert any("a restart is needed" in line and "network" in line and str(policy) in line
               for line in server.output), server.output[-20:]

    _rewrite(policy, POLICY.replace('allow = ["localhost"]', 'allow = ["*"]'))
    assert _tool(server, ADA, "bash", input={"command": fetch})["output"] == "403"
    assert any("not applied" in line and "egress.allow" in line for line in server.output), server.output[-20:]
