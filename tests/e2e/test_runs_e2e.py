"""Runs for CI end to end: the server as a real process, a fake Anthropic server speaking the real wire
format, a webhook receiver on loopback that checks the signature as docs/runs.md tells a receiver to."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import sandbox_workspace, server_env
from fakes.anthropic import FakeAnthropic
from fakes.origin import serving
from fakes.reply import Reply
from sandbox_support import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]

ACME = {"X-Tenant-ID": "acme"}
OTHER = {"X-Tenant-ID": "other"}
SECRET = "whsec_test_0123456789abcdef"
FINAL = {"succeeded", "failed", "cancelled", "timed_out"}


def verify(secret: str, headers: Any, body: bytes, tolerance_s: int = 300) -> bool:
    """The receiver's check, as docs/runs.md gives it."""
    parts = dict(p.split("=", 1) for p in headers["OpenAnalyst-Signature"].split(","))
    timestamp = parts["t"]
    if abs(time.time() - int(timestamp)) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


class Receiver:
    """What the webhook handler saw: (verified, event id, body) per request; fails the first ``failures``."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen: list[tuple[bool, str, dict[str, Any]]] = []
        self.delivered = threading.Event()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify(SECRET, self.headers, body)
                receiver.seen.append((ok, self.headers["OpenAnalyst-Webhook-Id"], json.loads(body)))
                status = 500 if len(receiver.seen) <= receiver.failures else (200 if ok else 400)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status == 200:
                    receiver.delivered.set()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def start(serve: Callable[..., Any], fake: FakeAnthropic, sandbox_image: str, tmp_path: Path
          ) -> Callable[..., Any]:
    """Start (or restart, on the same data directory) a server with the fake as its provider."""
    workspace = sandbox_workspace(tmp_path / "owner-ws")

    def run(**extra: str) -> Any:
        env = server_env(fake.base_url, workspace, **({"OPENANALYST_WEBHOOK_RETRY_FIRST_DELAY_S": "0.2"} | extra))
        return serve(env=env, data_dir=tmp_path / "data")

    return run


def final(base: str, run_id: str, headers: dict[str, str] = ACME, timeout: float = 60) -> dict[str, Any]:
    """Poll the run as a CI job would until it reaches a final state."""
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(httpx.get(f"{base}/v1/runs/{run_id}", headers=headers).json())
        return seen["status"] in FINAL

    wait_until(done, timeout, f"run {run_id} to end")
    return seen


def test_run_polled_to_completion_and_reported_to_a_signed_webhook(start: Callable[..., Any],
                                                                   fake: FakeAnthropic) -> None:
    """A run answers 202 at once, is polled to `succeeded` with usage, cost, answer and session; its webhook
    fails once and then takes the signed outcome, both attempts recorded with the same event id."""
    server = start(OPENANALYST_ALLOW_PRIVATE_PROVIDER_URLS="1")
    fake.script([Reply.text("All 12 tests pass.", usage=(100, 20))])
    receiver = Receiver(failures=1)
    with serving(receiver.handler()) as port:
        url = f"http://127.0.0.1:{port}/hook"
        created = httpx.post(f"{server.base}/v1/runs", headers=ACME, json={
            "message": "run the tests", "limits": {"max_turns": 3, "max_seconds": 60},
            "webhook": {"url": url, "secret": SECRET}})
        assert created.status_code == 202, created.text
        run = created.json()
        assert run["status"] in ("queued", "running") and run["webhook_secret"] is None
        done = final(server.base, run["run_id"])
        assert done["status"] == "succeeded" and done["error"] is None
        assert done["answer"] == "All 12 tests pass."
        assert done["usage"]["input_tokens"] == 100 and done["usage"]["output_tokens"] == 20
        assert done["usage"]["turns"] == 1 and done["usage"]["cost_usd"] > 0
        assert done["session_id"] and done["limits"]["max_turns"] == 3
        history = httpx.get(f"{server.base}/sessions/{done['session_id']}", headers=ACME).json()["messages"]
        assert history[0]["content"][0]["text"] == "run the tests"
        assert receiver.delivered.wait(30)
    assert [ok for ok, _, _ in receiver.seen] == [True, True]
    assert receiver.seen[0][1] == receiver.seen[1][1]  # one event id across retries
    body = receiver.seen[1][2]
    assert body["type"] == "run.finished" and body["run"]["run_id"] == run["run_id"]
    assert body["run"]["status"] == "succeeded" and body["run"]["answer"] == "All 12 tests pass."

    def two_recorded() -> bool:
        return len(httpx.get(f"{server.base}/v1/runs/{run['run_id']}/deliveries", headers=ACME).json()["data"]) == 2

    wait_until(two_recorded, 10, "the second attempt's record")
    attempts = httpx.get(f"{server.base}/v1/runs/{run['run_id']}/deliveries", headers=ACME).json()["data"]
    assert [(a["attempt"], a["status_code"], a["succeeded"]) for a in attempts] == [(1, 500, False), (2, 200, True)]
    assert attempts[0]["next_attempt_at"] is not None and attempts[1]["error"] is None
    listed = httpx.get(f"{server.base}/v1/runs", headers=ACME).json()["data"]
    assert [r["run_id"] for r in listed] == [run["run_id"]]
    assert httpx.get(f"{server.base}/v1/runs", headers=OTHER).json()["data"] == []
    assert httpx.get(f"{server.base}/v1/runs/{run['run_id']}", headers=OTHER).status_code == 404


def test_limits_cancel_and_refused_webhooks(start: Callable[..., Any], fake: FakeAnthropic) -> None:
    """An unknown environment is a 404, max_turns fails a run with TURN_LIMIT, max_seconds times one out, a
    cancel stops one (a second cancel answers the same), a run whose session is deleted fails (its turn is
    interrupted), and a webhook to a loopback address is refused when the owner has not allowed it."""
    server = start()
    refused = httpx.post(f"{server.base}/v1/runs", headers=ACME, json={
        "message": "x", "webhook": {"url": "http://127.0.0.1:9/hook"}})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "WEBHOOK_URL_REFUSED"
    unknown = httpx.post(f"{server.base}/v1/runs", headers=ACME, json={"message": "x", "environment": "nope"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "ENVIRONMENT_NOT_FOUND"

    fake.script([Reply.tool_call("todo_write", {"todos": [{"content": "a", "status": "pending"}]})])
    turns = httpx.post(f"{server.base}/v1/runs", headers=ACME,
                       json={"message": "plan", "limits": {"max_turns": 1}}).json()
    limited = final(server.base, turns["run_id"])
    assert limited["status"] == "failed" and limited["error"]["code"] == "TURN_LIMIT"
    assert limited["usage"]["turns"] == 1

    fake.script([Reply.text("too late").with_(first_byte_delay=60)])
    slow = httpx.post(f"{server.base}/v1/runs", headers=ACME,
                      json={"message": "slow", "limits": {"max_seconds": 1.5}}).json()
    timed = final(server.base, slow["run_id"])
    assert timed["status"] == "timed_out" and timed["error"]["code"] == "TIME_LIMIT"
    assert httpx.get(f"{server.base}/sessions/{timed['session_id']}", headers=ACME).json()["state"] == "idle"

    fake.script([Reply.text("never").with_(first_byte_delay=60)])
    run = httpx.post(f"{server.base}/v1/runs", headers=ACME, json={"message": "stop me"}).json()
    wait_until(lambda: len(fake.requests) >= 3, 30, "the run's model request")
    cancelled = httpx.post(f"{server.base}/v1/runs/{run['run_id']}/cancel", headers=ACME, timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = httpx.post(f"{server.base}/v1/runs/{run['run_id']}/cancel", headers=ACME, timeout=30)
    assert again.status_code == 200 and again.json() == cancelled.json()  # idempotent
    assert httpx.post(f"{server.base}/v1/runs/run_nope/cancel", headers=ACME).status_code == 404

    fake.script([Reply.text("never").with_(first_byte_delay=60)])
    orphan = httpx.post(f"{server.base}/v1/runs", headers=ACME, json={"message": "lose my session"}).json()
    wait_until(lambda: len(fake.requests) >= 4, 30, "the orphan run's model request")
    session_id = httpx.get(f"{server.base}/v1/runs/{orphan['run_id']}", headers=ACME).json()["session_id"]
    assert httpx.delete(f"{server.base}/sessions/{session_id}", headers=ACME, timeout=30).status_code == 204
    gone = final(server.base, orphan["run_id"])
    assert gone["status"] == "failed" and gone["error"]["code"] == "INTERRUPTED"  # the deletion stops its turn


def test_restart_while_running_marks_the_run_failed(start: Callable[..., Any], fake: FakeAnthropic) -> None:
    """A server killed while a run waits on its model comes back with that run failed SERVER_RESTARTED (never
    stuck running), and its webhook is told."""
    server = start(OPENANALYST_ALLOW_PRIVATE_PROVIDER_URLS="1")
    fake.script([Reply.text("never").with_(first_byte_delay=60)])
    receiver = Receiver(failures=0)
    with serving(receiver.handler()) as port:
        run = httpx.post(f"{server.base}/v1/runs", headers=ACME, json={
            "message": "long job", "webhook": {"url": f"http://127.0.0.1:{port}/h", "secret": SECRET}}).json()
        wait_until(lambda: httpx.get(f"{server.base}/v1/runs/{run['run_id']}", headers=ACME).json()["status"]
                   == "running", 30, "the run to start")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=30)
        again = start(OPENANALYST_ALLOW_PRIVATE_PROVIDER_URLS="1")
        after = httpx.get(f"{again.base}/v1/runs/{run['run_id']}", headers=ACME).json()
        assert after["status"] == "failed" and after["error"]["code"] == "SERVER_RESTARTED"
        assert after["finished_at"] is not None
        assert receiver.delivered.wait(30)
    assert receiver.seen[0][0] is True and receiver.seen[0][2]["run"]["status"] == "failed"


def test_a_delivery_cut_by_a_restart_goes_on_after_it(start: Callable[..., Any], fake: FakeAnthropic) -> None:
    """A webhook that failed once, with its retry a minute away when the server dies, gets the outcome from
    the next process: the next attempt number, the same event id, both attempts recorded."""
    server = start(OPENANALYST_ALLOW_PRIVATE_PROVIDER_URLS="1", OPENANALYST_WEBHOOK_RETRY_FIRST_DELAY_S="60")
    fake.script([Reply.text("done before the crash")])
    receiver = Receiver(failures=1)
    with serving(receiver.handler()) as port:
        run = httpx.post(f"{server.base}/v1/runs", headers=ACME, json={
            "message": "quick", "webhook": {"url": f"http://127.0.0.1:{port}/h", "secret": SECRET}}).json()
        path = f"/v1/runs/{run['run_id']}/deliveries"
        wait_until(lambda: len(httpx.get(server.base + path, headers=ACME).json()["data"]) == 1, 30,
                   "the first, failed attempt's record")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=30)
        again = start(OPENANALYST_ALLOW_PRIVATE_PROVIDER_URLS="1")
        assert receiver.delivered.wait(30)
    wait_until(lambda: len(httpx.get(again.base + path, headers=ACME).json()["data"]) == 2, 10,
               "the resumed attempt's record")
    attempts = httpx.get(again.base + path, headers=ACME).json()["data"]
    assert [(a["attempt"], a["status_code"], a["succeeded"]) for a in attempts] == [(1, 500, False), (2, 200, True)]
    assert len({a["event_id"] for a in attempts}) == 1 and receiver.seen[0][1] == receiver.seen[1][1]
    assert all(ok for ok, _, _ in receiver.seen) and receiver.seen[1][2]["run"]["status"] == "succeeded"


def test_a_tenant_cannot_queue_runs_without_bound(start: Callable[..., Any], fake: FakeAnthropic) -> None:
    """Past OPENANALYST_MAX_ACTIVE_RUNS_PER_TENANT queued or running runs a tenant's next run is 429
    RUN_LIMIT_REACHED with a Retry-After (nothing is stored); another tenant is not held by it, and a run that
    ends frees its place."""
    server = start(OPENANALYST_MAX_ACTIVE_RUNS_PER_TENANT="2")
    fake.script([Reply.text("never").with_(first_byte_delay=60) for _ in range(3)])
    session = httpx.post(f"{server.base}/sessions", headers=ACME, timeout=30).json()["session_id"]
    held = [httpx.post(f"{server.base}/v1/runs", headers=ACME, json={"message": f"job {i}", "session_id": session},
                       timeout=30) for i in range(2)]
    assert [r.status_code for r in held] == [202, 202]
    over = httpx.post(f"{server.base}/v1/runs", headers=ACME, json={"message": "one too many"}, timeout=30)
    assert over.status_code == 429 and over.json()["error"]["code"] == "RUN_LIMIT_REACHED", over.text
    assert int(over.headers["Retry-After"]) > 0
    listed = httpx.get(f"{server.base}/v1/runs", headers=ACME, timeout=30).json()["data"]
    assert sorted(r["run_id"] for r in listed) == sorted(r.json()["run_id"] for r in held)
    assert httpx.post(f"{server.base}/v1/runs", headers=OTHER, json={"message": "mine"},
                      timeout=30).status_code == 202
    cancelled = httpx.post(f"{server.base}/v1/runs/{held[1].json()['run_id']}/cancel", headers=ACME, timeout=30)
    assert cancelled.json()["status"] == "cancelled"
    again = httpx.post(f"{server.base}/v1/runs", headers=ACME, json={"message": "now there is room"}, timeout=30)
    assert again.status_code == 202, again.text


def test_a_runs_max_turns_bounds_its_sub_agents_too(start: Callable[..., Any], fake: FakeAnthropic) -> None:
    """max_turns counts every model request the run causes: a sub-agent spends the same budget, so a run of
    2 turns whose first turn starts a sub-agent makes 2 requests in all and fails TURN_LIMIT (the sub-agent
    had 2 turns of its own before, and its parent 2 more)."""
    server = start()
    fake.script([Reply.tool_call("agent", {"description": "helper", "prompt": "plan it"}, id="toolu_parent"),
                 Reply.tool_call("todo_write", {"todos": [{"content": "a", "status": "pending"}]}),
                 Reply.text("the sub-agent's third turn"), Reply.text("the parent's second turn")])
    run = httpx.post(f"{server.base}/v1/runs", headers=ACME, json={"message": "delegate",
                                                                   "limits": {"max_turns": 2}}).json()
    ended = final(server.base, run["run_id"])
    assert ended["status"] == "failed" and ended["error"]["code"] == "TURN_LIMIT", ended
    assert len(fake.requests) == 2
