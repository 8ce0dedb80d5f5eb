"""``GET /metrics`` read through the real server process, before and after real work: a tool call in the
real sandbox, a refused call, a provider call to a fake upstream, an open SSE stream."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import sandbox_workspace, server_env
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.e2e]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TENANT = "tenant-zeta-77"


def scrape(server: Any, **headers: str) -> Samples:
    response = httpx.get(server.base + "/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def server(serve: Callable[..., Any], anthropic: FakeAnthropic, tmp_path: Path) -> Any:
    env = server_env(anthropic.base_url, sandbox_workspace(tmp_path / "owner-ws"),
                     OPENANALYST_PROVIDER_MAX_RETRIES="0")
    return serve(env=env)


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_tool_call_moves_the_tool_counters(server: Any, sandbox_image: str) -> None:
    """A bash call in the sandbox adds one ok bash call with its latency, two audit writes and a request on
    the route template; an unknown tool adds one denied call under 'unknown'; a running container shows."""
    before = scrape(server)
    call = httpx.post(server.base + "/v1/tools/bash", json={"input": {"command": "echo metered"}}, timeout=120)
    assert call.status_code == 200 and "metered" in call.json()["output"]
    unknown = httpx.post(server.base + "/v1/tools/no_such_tool_x", json={"input": {}}, timeout=30)
    assert unknown.status_code == 404
    after = scrape(server)
    assert value(after, "openanalyst_tool_calls_total", tool="bash", outcome="ok") == \
        value(before, "openanalyst_tool_calls_total", tool="bash", outcome="ok") + 1
    assert value(after, "openanalyst_tool_call_duration_seconds_count", tool="bash", outcome="ok") == \
        value(before, "openanalyst_tool_call_duration_seconds_count", tool="bash", outcome="ok") + 1
    assert value(after, "openanalyst_tool_call_duration_seconds_sum", tool="bash", outcome="ok") > \
        value(before, "openanalyst_tool_call_duration_seconds_sum", tool="bash", outcome="ok")
    assert value(after, "openanalyst_tool_calls_total", tool="unknown", outcome="denied") == \
        value(before, "openanalyst_tool_calls_total", tool="unknown", outcome="denied") + 1
    assert not any(dict(labels).get("tool") == "no_such_tool_x" for _, labels in after)
    assert value(after, "openanalyst_audit_write_seconds_count") >= \
        value(before, "openanalyst_audit_write_seconds_count") + 4  # started + finished, twice
    route = {"method": "POST", "route": "/v1/tools/{name}"}
    assert value(after, "openanalyst_http_requests_total", **route, status="200") == \
        value(before, "openanalyst_http_requests_total", **route, status="200") + 1
    assert value(after, "openanalyst_http_requests_total", **route, status="404") == \
        value(before, "openanalyst_http_requests_total", **route, status="404") + 1
    assert value(after, "openanalyst_sandbox_image_state", state="ready") == 1
    deadline = time.monotonic() + 30  # container counts are read from the engine at most every 5 s
    while value(scrape(server), "openanalyst_sandbox_containers", state="running") < 1:
        assert time.monotonic() < deadline, "the running container never showed in /metrics"
        time.sleep(0.5)  # poll interval against the deadline above


@pytest.mark.timeout(120)
def test_provider_calls_breakers_and_streams(server: Any, anthropic: FakeAnthropic) -> None:
    """A completion adds an ok attempt for the provider and one closed breaker; a failed one a 'retryable'
    attempt; an open SSE stream is counted while it lasts."""
    before = scrape(server)
    anthropic.script([Reply.text("fine"), Reply.http_error(500, "server")])
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(server.base + "/v1/chat/completions", json=body, timeout=30).status_code == 200
    assert httpx.post(server.base + "/v1/chat/completions", json=body, timeout=30).status_code == 502
    session = httpx.post(server.base + "/sessions", json={}, timeout=30).json()["session_id"]
    with httpx.stream("GET", f"{server.base}/sessions/{session}/events", timeout=30) as events:
        assert events.status_code == 200
        during = scrape(server)
    after = scrape(server)
    assert value(after, "openanalyst_provider_attempts_total", provider="anthropic", outcome="ok") == \
        value(before, "openanalyst_provider_attempts_total", provider="anthropic", outcome="ok") + 1
    assert value(after, "openanalyst_provider_attempts_total", provider="anthropic", outcome="retryable") == \
        value(before, "openanalyst_provider_attempts_total", provider="anthropic", outcome="retryable") + 1
    assert value(after, "openanalyst_provider_breakers", provider="anthropic", state="closed") == 1
    events_route = "/sessions/{session_id}/events"
    assert value(during, "openanalyst_sse_streams_open", route=events_route) == 1
    assert value(during, "openanalyst_session_event_subscribers") == 1
    assert value(after, "openanalyst_sse_streams_open", route=events_route) == 0


@pytest.mark.timeout(120)
def test_only_the_owner_reads_metrics_and_no_tenant_shows(server: Any) -> None:
    """A tenant gets 403 METRICS_FORBIDDEN; its requests are counted, but its id appears nowhere in the text."""
    assert httpx.get(server.base + "/v1/sessions", headers={"X-Tenant-ID": TENANT}, timeout=30).status_code in (
        200, 404)
    assert httpx.post(server.base + "/sessions", json={}, headers={"X-Tenant-ID": TENANT},
                      timeout=30).status_code == 201
    refused = httpx.get(server.base + "/metrics", headers={"X-Tenant-ID": TENANT}, timeout=30)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "METRICS_FORBIDDEN"
    text = httpx.get(server.base + "/metrics", timeout=30).text
    assert 'route="/sessions"' in text and TENANT not in text
    assert 'route="unmatched"' in text  # /v1/sessions does not exist: counted without its path
    assert "/v1/sessions" not in text
