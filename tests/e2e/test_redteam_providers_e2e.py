"""Red-team findings 1 and 6 replayed against the server as a real process, its OpenAI key in the environment
(shared with every tenant) pointing at a fake OpenAI over real HTTP on loopback: one tenant's crafted request
no longer opens the circuit every tenant shares, and one tenant's upstream error text (which quotes its
prompt) is not shown to another tenant."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.openai import FakeOpenAI
from fakes.reply import Reply

pytestmark = [pytest.mark.e2e]

SHARED_KEY = "sk-openai-shared-0000-1234"


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def server(serve: Callable[..., Any], upstream: FakeOpenAI, tmp_path: Path) -> Any:
    return serve(env={"OPENAI_API_KEY": SHARED_KEY, "OPENAI_BASE_URL": upstream.v1})


def completion(server: Any, tenant: str | None, content: bytes | None = None, text: str = "hi") -> httpx.Response:
    headers = {"content-type": "application/json", **({"X-Tenant-ID": tenant} if tenant else {})}
    body = content or json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}).encode()
    return httpx.post(server.base + "/v1/chat/completions", content=body, headers=headers, timeout=60)


def openai_status(server: Any, tenant: str | None) -> dict[str, Any]:
    headers = {"X-Tenant-ID": tenant} if tenant else {}
    listed = httpx.get(server.base + "/v1/providers/status", headers=headers, timeout=10).json()["data"]
    (found,) = [s for s in listed if s["provider"] == "openai"]
    return dict(found)


def test_one_tenants_crafted_request_cannot_open_the_shared_circuit(server: Any, upstream: FakeOpenAI) -> None:
    """The red team's request: UTF-16-LE, a tool schema nested 950 JSON levels deep. It is refused at the edge (400
    BODY_NOT_UTF8), three times over; the shared breaker stays closed with no failure, the upstream saw
    nothing, and tenant B and the owner are served."""
    upstream.default = Reply.text("served")
    schema = '{"type":"object","properties":{"x":' * 475 + '{"type":"string"}' + "}}" * 475  # 950 levels
    attack = ('{"model":"gpt-4o","messages":[{"role":"user","content":"\u2241"}],'
              '"tools":[{"type":"function","function":{"name":"t","parameters":' + schema + "}}]}"
              ).encode("utf-16-le")
    for _ in range(3):
        refused = completion(server, "tenant-a", attack)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "BODY_NOT_UTF8", refused.text
    assert upstream.requests == []
    shared = openai_status(server, "tenant-b")
    assert shared["state"] == "closed" and shared["consecutive_failures"] == 0
    for tenant in ("tenant-b", None):
        answer = completion(server, tenant)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == "served"
    assert len(upstream.requests) == 2


def test_another_tenants_upstream_error_is_not_shown(server: Any, upstream: FakeOpenAI) -> None:
    """Tenant A's prompt is refused upstream with a message quoting it; A's status shows that error, tenant B
    and the owner (same key, same breaker) see the breaker but not A's message, nor A's latency."""
    upstream.script([Reply.http_error(400, message="Invalid prompt: SECRET: patient John Doe, diagnosis X"),
                     Reply.text("for A")])
    refused = completion(server, "tenant-a", text="SECRET: patient John Doe, diagnosis X")
    assert refused.status_code == 400, refused.text
    assert "SECRET" in (openai_status(server, "tenant-a")["last_error"] or "")
    assert completion(server, "tenant-a").status_code == 200
    for other in ("tenant-b", None):
        seen = openai_status(server, other)
        assert seen["breaker_key"] == openai_status(server, "tenant-a")["breaker_key"]
        assert seen["last_error"] is None and seen["last_latency_ms"] is None, seen
        assert "SECRET" not in json.dumps(seen)
