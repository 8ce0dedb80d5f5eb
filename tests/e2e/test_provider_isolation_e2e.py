"""Providers per tenant, as clients of the real server see them: two tenants (X-Tenant-ID) on their own
gateways for the same provider — fakes speaking the Anthropic wire over real HTTP on loopback — and the
rule for tenant-supplied base URLs with and without the owner's allow-list."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import TEST_KEY, server_env
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]

KEY_A = "sk-ant-tenant-a-SECRET-0000aaaa"
KEY_B = "sk-ant-tenant-b-SECRET-0000bbbb"


def chat(server: Any, tenant: str | None, message: str = "hello") -> httpx.Response:
    headers = {"X-Tenant-ID": tenant} if tenant else {}
    return httpx.post(f"{server.base}/v1/chat", headers=headers, timeout=60,
                      json={"message": message, "model": "claude-sonnet-4-5", "stream": False})


def status(server: Any, tenant: str | None) -> dict[str, dict[str, Any]]:
    headers = {"X-Tenant-ID": tenant} if tenant else {}
    response = httpx.get(f"{server.base}/v1/providers/status", headers=headers, timeout=10)
    assert response.status_code == 200
    return {s["provider"]: s for s in response.json()["data"]}


def put_provider(server: Any, tenant: str | None, key: str, base_url: str) -> httpx.Response:
    headers = {"X-Tenant-ID": tenant} if tenant else {}
    return httpx.put(f"{server.base}/me/providers/anthropic", headers=headers, timeout=30,
                     json={"api_key": key, "base_url": base_url})


@pytest.fixture
def gateways() -> Iterator[tuple[FakeAnthropic, FakeAnthropic]]:
    with FakeAnthropic() as failing, FakeAnthropic() as working:
        failing.default = Reply.http_error(500, "server", message="gateway A is broken")
        working.default = Reply.text("Served for B.")
        yield failing, working


@pytest.fixture
def allowlisted(serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> Any:
    """A server whose owner allows tenants' provider URLs on 127.0.0.1 (where the fakes listen), only."""
    return serve(env={"OPENANALYST_PROVIDER_URL_ALLOWLIST": "127.0.0.1/32"})


def test_one_tenants_failing_gateway_never_opens_another_tenants_circuit(
        allowlisted: Any, gateways: tuple[FakeAnthropic, FakeAnthropic]) -> None:
    """Tenant A's gateway answers 500s until A's breaker opens; tenant B, on the same provider through its own
    gateway and key, is served before and after; the status route shows each tenant its own breaker by key,
    and no secret anywhere."""
    failing, working = gateways
    assert put_provider(allowlisted, "tenant-a", KEY_A, failing.base_url).status_code == 200
    assert put_provider(allowlisted, "tenant-b", KEY_B, working.base_url).status_code == 200

    first_b = chat(allowlisted, "tenant-b")
    assert first_b.status_code == 200 and first_b.json()["message"] == "Served for B."
    broken = chat(allowlisted, "tenant-a")
    assert broken.status_code == 502 and broken.json()["error"]["code"] == "ALL_PROVIDERS_FAILED"
    tried = len(failing.requests)
    assert tried == 3  # one try and two retries: three failures in a row open the breaker
    status_a = status(allowlisted, "tenant-a")["anthropic"]
    assert status_a["state"] == "open" and status_a["consecutive_failures"] == 3

    skipped = chat(allowlisted, "tenant-a")
    assert skipped.status_code == 502 and "circuit open" in skipped.json()["error"]["message"]
    assert len(failing.requests) == tried  # skipped without a request
    for _ in range(3):
        answer = chat(allowlisted, "tenant-b")
        assert answer.status_code == 200 and answer.json()["message"] == "Served for B.", answer.text
    assert len(working.requests) == 4
    assert all(r.headers["x-api-key"] == KEY_B for r in working.requests)

    status_b = status(allowlisted, "tenant-b")["anthropic"]
    assert status_b["state"] == "closed" and status_b["consecutive_failures"] == 0
    assert status_b["last_error"] is None and status_b["last_latency_ms"] is not None
    assert status_a["breaker_key"].startswith("anthropic:") and status_b["breaker_key"].startswith("anthropic:")
    assert status_a["breaker_key"] != status_b["breaker_key"]
    assert "gateway A is broken" in status_a["last_error"]
    seen = str(status_a) + str(status_b) + broken.text + skipped.text
    assert "SECRET" not in seen and "0000aaaa" not in seen and "0000bbbb" not in seen


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9", "http://10.0.0.5/v1", "http://169.254.169.254/latest", "http://[::1]:8080",
    "http://2130706433/", "http://0x7f000001/", "http://localhost:11434", "http://100.64.0.1",
])
def test_default_server_refuses_private_tenant_urls(serve: Callable[..., Any], sandbox_image: str,
                                                    url: str) -> None:
    """Without the owner's setting, a tenant may not point a provider at loopback (as an IP, [::1], a decimal
    or hex number, or the name localhost), a private, CGNAT or metadata address: 422 PROVIDER_URL_FORBIDDEN,
    nothing stored; the owner may."""
    server = serve()
    refused = put_provider(server, "tenant-a", KEY_A, url)
    assert refused.status_code == 422, refused.text
    body = refused.json()["error"]
    assert body == {"code": "PROVIDER_URL_FORBIDDEN", "message": body["message"], "status": 422}
    listed = httpx.get(f"{server.base}/me/providers", headers={"X-Tenant-ID": "tenant-a"}, timeout=10).json()
    assert listed["data"] == []
    assert put_provider(server, None, KEY_A, url).status_code == 200


def test_owner_env_urls_on_loopback_keep_working(serve: Callable[..., Any], sandbox_image: str,
                                                 gateways: tuple[FakeAnthropic, FakeAnthropic],
                                                 tmp_path: Path) -> None:
    """The server's own configuration (ANTHROPIC_BASE_URL on loopback, from the environment) is not bound by
    the rule: the owner and a tenant sharing the server's key are both served through it, sharing its
    breaker."""
    _, working = gateways
    server = serve(env=server_env(working.base_url, tmp_path / "workspace"))
    owner = chat(server, None)
    tenant = chat(server, "tenant-c")
    assert owner.status_code == 200 and tenant.status_code == 200, (owner.text, tenant.text)
    assert [r.headers["x-api-key"] for r in working.requests] == [TEST_KEY, TEST_KEY]
    assert status(server, None)["anthropic"]["breaker_key"] == status(server, "tenant-c")["anthropic"]["breaker_key"]


def test_stored_url_is_checked_again_at_connection(serve: Callable[..., Any], sandbox_image: str,
                                                   gateways: tuple[FakeAnthropic, FakeAnthropic],
                                                   tmp_path: Path) -> None:
    """A tenant URL accepted while the owner allowed loopback is refused at connection time once the owner
    withdraws the allowance (the same check a DNS answer changed to a private address meets): the turn
    fails without a request reaching the gateway."""
    _, working = gateways
    data_dir = tmp_path / "data"
    first = serve(env={"OPENANALYST_ALLOW_PRIVATE_PROVIDER_URLS": "1"}, data_dir=data_dir)
    assert put_provider(first, "tenant-a", KEY_A, working.base_url).status_code == 200
    assert chat(first, "tenant-a").status_code == 200 and len(working.requests) == 1
    assert first.stop() == 0
    second = serve(data_dir=data_dir)
    refused = chat(second, "tenant-a")
    assert refused.status_code == 502, refused.text
    message = refused.json()["error"]["message"]
    assert "forbidden" in message and "loopback" in message
    assert len(working.requests) == 1
    assert status(second, "tenant-a")["anthropic"]["consecutive_failures"] == 0


def test_tenant_ollama_without_url_is_refused_for_its_loopback_default(serve: Callable[..., Any],
                                                                       sandbox_image: str) -> None:
    """Ollama's default URL is 127.0.0.1:11434: a tenant setting Ollama without a base_url is refused as if it
    had given that URL; a public provider without a base_url needs no lookup and is stored."""
    server = serve()
    headers = {"X-Tenant-ID": "tenant-o"}
    refused = httpx.put(f"{server.base}/me/providers/ollama", headers=headers, json={"api_key": "ollama-key-1"},
                        timeout=10)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "PROVIDER_URL_FORBIDDEN"
    assert "loopback" in refused.json()["error"]["message"]
    stored = httpx.put(f"{server.base}/me/providers/xai", headers=headers, json={"api_key": "xai-key-000011112222"},
                       timeout=10)
    assert stored.status_code == 200
