"""Connection records in the audit log (log format 3) on a real SQLite file: they chain with the tool records of
their tenant and verify online and offline; the host and decision filters pick them; a record whose version
and kind disagree, or with a key of the other kind, fails verification; the call ledger sums a call's records
into its bounded network summary and stops naming the call once it ended."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.audit.log import AuditLog
from server.audit.records import connection_draft, record_problem, seal
from server.audit.verify import verify_lines
from server.egress_wiring import AuditConnections, audited_fields
from toolrunner.egress import ConnectionRecord, Identity, SessionKeys
from toolrunner.egress.calls import MAX_HOSTS, CallLedger
from toolrunner.runner.egress_env import call_credential

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[AuditLog]:
    audit = AuditLog(tmp_path / "audit.db")
    await audit.open()
    yield audit
    await audit.close()


def attempt(host: str, decision: str = "allow", *, call: str | None = "call_1", session: str | None = "ses_1",
            tenant: str = "ada", **extra: Any) -> ConnectionRecord:
    rec = ConnectionRecord(time.time(), tenant, session, call, "CONNECT", host, 443, address="203.0.113.7",
                           decision="allow" if decision == "allow" else "deny",
                           rule="allow:" + host if decision == "allow" else "default",
                           bytes_up=120, bytes_down=4096 if decision == "allow" else 0, duration_ms=12.3456)
    for name, value in extra.items():
        setattr(rec, name, value)
    return rec


async def test_connection_records_chain_filter_and_verify(log: AuditLog) -> None:
    """A tool call's records and its two connections in one chain: the list, the filters, verify and an
    offline check of the export all agree; another tenant's listing is empty."""
    await log.started("ada", call_id="call_1", session_id="ses_1", tool="bash", input={"command": "curl"},
                      policy="p", decision="allowed")
    await log.connection("ada", audited_fields(attempt("pypi.org")))
    await log.connection("ada", audited_fields(attempt("evil.test", "deny")))
    await log.finished("ada", call_id="call_1", session_id="ses_1", tool="bash",
                       result={"output": "", "exit_code": 0, "duration_ms": 3.0}, oom_killed=False,
                       container_id=None, image_id=None, policy="p", decision="allowed")
    rows, total = await log.list("ada", phase="connection")
    assert total == 2
    assert [(r["host"], r["decision"], r["rule"], r["reason"], r["call_id"], r["v"]) for r in rows] == [
        ("pypi.org", "allowed", "allow:pypi.org", None, "call_1", 2),
        ("evil.test", "denied", "default", "default", "call_1", 2)]
    assert rows[0]["duration_ms"] == 12.346 and rows[0]["bytes_down"] == 4096 and rows[0]["started_at"].endswith("Z")
    denied, _ = await log.list("ada", decision="denied")
    assert [r["host"] for r in denied] == ["evil.test"]
    by_host, _ = await log.list("ada", host="pypi.org")
    assert [r["seq"] for r in by_host] == [2]
    assert (await log.list("bob"))[1] == 0
    assert (await log.verify("ada"))["ok"] is True
    lines = await asyncio.to_thread(lambda: list(log.iter_export("ada")))
    verdict = verify_lines(lines, log.public_key)
    assert (verdict.ok, verdict.records) == (True, 4), verdict


def test_a_record_of_one_kind_with_the_other_kinds_shape_is_refused() -> None:
    """The version decides the key set: a connection record passed off as v1, or carrying a tool field, or a
    v1 record claiming the connection phase, each fails the shape check."""
    good = seal(connection_draft("ada", audited_fields(attempt("pypi.org"))), seq=1, ts="t", prev_hash="0")
    assert record_problem(good) is None
    assert "wrong fields" in (record_problem(good | {"v": 1}) or "")
    assert "wrong fields" in (record_problem(good | {"output": "x"}) or "")
    assert "phase" in (record_problem(good | {"phase": "finished"}) or "")
    assert "version" in (record_problem(good | {"v": 3}) or "")


def test_a_oneshot_session_is_no_session_and_its_leftovers_its_calls() -> None:
    """The runner session of a call outside any session is recorded as no session; a connection from a
    process that call left behind still names that call; web_fetch's empty session is none."""
    fields = audited_fields(attempt("pypi.org", call=None, session="oneshot-call_9"))
    assert (fields["session"], fields["call_id"]) == (None, "call_9")
    assert audited_fields(attempt("pypi.org", session=""))["session"] is None


async def test_the_ledger_names_a_call_and_sums_it_while_it_runs() -> None:
    """A call's credential names it; its records fold into a summary with at most MAX_HOSTS names of each kind;
    after it ended the same credential still names the call (a process it left), outside any summary."""
    keys = SessionKeys()
    key = keys.new_key("ada")
    ledger = CallLedger(keys, settle_s=5.0)
    attribute = ledger.attribute(keys.attribute)
    credential = call_credential(key, "ses_1", "call_1")
    assert credential is not None
    ledger.begin("ada", "call_1", "ses_1")
    hosts = [f"h{i}.test" for i in range(MAX_HOSTS + 3)]
    for _host in hosts:
        who = attribute(Identity("ada"), credential)
        assert who is not None and (who.session, who.call_id) == ("ses_1", "call_1")
    assert attribute(Identity("bob"), credential) is None  # another tenant's socket: no key, no name

    async def deliver() -> None:  # the proxy's thread, a moment after the call returned
        for i, host in enumerate(hosts):
            await asyncio.to_thread(ledger.recorded, attempt(host, "deny" if i == 0 else "allow"))

    delivery = asyncio.create_task(deliver())
    summary = await ledger.end("ada", "call_1", "ses_1")
    await delivery
    assert summary is not None
    assert (summary.allowed, summary.denied, summary.open) == (len(hosts) - 1, 1, 0)
    assert summary.hosts == [f"{h}:443" for h in hosts[1:MAX_HOSTS + 1]] and summary.denied_hosts == ["h0.test:443"]
    assert summary.more_hosts == 2 and summary.bytes_down == 4096 * (len(hosts) - 1)
    assert len(json.dumps(summary.model_dump())) < 1024
    after = attribute(Identity("ada"), credential)
    assert after is not None and (after.session, after.call_id) == ("ses_1", "call_1")
    assert len(ledger) == 0


async def test_a_connection_that_outlives_its_call_is_counted_open() -> None:
    """An attempt whose record has not come when the settle time is up is summed as open, not waited for."""
    keys = SessionKeys()
    key = keys.new_key("ada")
    ledger = CallLedger(keys, settle_s=0.05)
    ledger.begin("ada", "call_1", "ses_1")
    assert ledger.attribute(keys.attribute)(Identity("ada"), call_credential(key, "ses_1", "call_1")) is not None
    summary = await ledger.end("ada", "call_1", "ses_1")
    assert summary is not None and (summary.allowed, summary.denied, summary.open) == (0, 0, 1)
    assert await ledger.end("ada", "call_2", None) is None  # a call that never began, or made no attempt


async def test_the_sink_holds_the_proxy_while_records_wait_or_fail(log: AuditLog) -> None:
    """With one record waiting for the writer (max_pending 1) the sink refuses new connections ('audit') until
    it is committed; after a record cannot be queued (the log closed) it refuses for retry_s; a refusal for
    'audit' is not queued itself."""
    sink = AuditConnections(log, CallLedger(SessionKeys()), max_pending=1, retry_s=60.0)
    assert sink.admit("ada") is None
    sink.record(attempt("pypi.org"))
    assert sink.admit("ada") == "audit"
    deadline = time.monotonic() + 10
    while sink.admit("ada") is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # the writer thread commits, then the loop runs the done callback
    assert sink.admit("ada") is None
    assert (await log.count("ada")) == 1
    sink.record(attempt("pypi.org", "deny", limit="audit"))
    assert (await log.count("ada")) == 1 and sink.admit("ada") is None
    await log.close()
    sink.record(attempt("pypi.org"))
    assert sink.admit("ada") == "audit"


async def test_one_tenants_refusals_cannot_fill_the_backlog_or_hold_the_others(log: AuditLog) -> None:
    """A tenant's own backlog bound holds that tenant alone, and its refusals made before the proxy asks
    ``admit`` (a bad head, a bad credential) are not queued while it is held: the backlog stays bounded."""
    sink = AuditConnections(log, CallLedger(SessionKeys()), max_pending=10, max_pending_per_tenant=1)
    sink.record(attempt("pypi.org"))
    assert sink.admit("ada") == "audit" and sink.admit("bob") is None
    for _ in range(5):
        sink.record(attempt("", "deny", call=None, rule="bad-request"))
    sink.record(attempt("pypi.org", tenant="bob"))
    deadline = time.monotonic() + 10
    while (sink.admit("ada"), sink.admit("bob")) != (None, None) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # the writer thread commits, then the loop runs the done callbacks
    assert (await log.count("ada"), await log.count("bob")) == (1, 1)


async def test_a_tenant_refusing_itself_in_a_loop_is_recorded_at_a_bounded_rate(log: AuditLog) -> None:
    """Past refusals_per_s (one second's burst) a tenant's refused attempts are not queued and it is held for
    retry_s, so a loop of refusals cannot grow the shared audit log at the proxy's speed; another tenant is
    neither held nor unrecorded."""
    sink = AuditConnections(log, CallLedger(SessionKeys()), refusals_per_s=3, retry_s=60.0)
    for _ in range(10):
        sink.record(attempt("", "deny", call=None, rule="credential"))
    assert sink.admit("ada") == "audit" and sink.admit("bob") is None
    sink.record(attempt("evil.test", "deny", tenant="bob"))
    await log.connection("zed", audited_fields(attempt("pypi.org", tenant="zed")))  # after all queued before it
    assert (await log.count("ada"), await log.count("bob")) == (3, 1)
