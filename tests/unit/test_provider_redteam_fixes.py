"""Red-team findings 1, 6 and 10 against the router and URL guard, with a real fake OpenAI over real HTTP:
a request that breaks an adapter before anything is sent does not count against (nor open) the breaker every
tenant on the server's key shares; a shared breaker's last error and latency are shown only to the tenant
whose request produced them; an invalid IDNA host is a refusal, not a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fakes import FakeOpenAI, Reply

from server.providers.config import RouterConfig
from server.providers.credentials import ProviderCredential, StaticCredentials
from server.providers.failover import AllProvidersFailed, ProviderRouter, ProviderStatus
from server.providers.types import ChatRequest, Message, ProviderError, TextBlock, TextDelta, ToolSpec
from server.providers.urlguard import ProviderUrlForbidden, parse_base_url

FAST = RouterConfig(backoff_base_s=0.01, backoff_max_s=0.02, max_retries=2)


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def shared_key(fake: FakeOpenAI) -> StaticCredentials:
    """The server's own OpenAI key (``source="env"``): every tenant uses it, so they share one breaker."""
    return StaticCredentials([ProviderCredential("openai", "sk-openai-shared-1", fake.v1, "env")])


def deep_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def plain(text: str = "hi") -> ChatRequest:
    return ChatRequest(model="gpt-4o", messages=[Message(role="user", blocks=[TextBlock(text=text)])])


async def run(router: ProviderRouter, tenant: str, req: ChatRequest) -> tuple[str, BaseException | None]:
    text: list[str] = []
    try:
        async for event in router.stream(tenant, req):
            if isinstance(event, TextDelta):
                text.append(event.text)
    except (ProviderError, AllProvidersFailed) as exc:
        return "".join(text), exc
    return "".join(text), None


def statuses(router: ProviderRouter, tenant: str) -> dict[str, ProviderStatus]:
    async def get() -> dict[str, ProviderStatus]:
        return {s.provider: s for s in await router.status(tenant)}
    return asyncio.run(get())


def test_request_that_cannot_be_encoded_never_opens_the_shared_breaker(upstream: FakeOpenAI) -> None:
    """Finding 1: a tool schema too deep for ``json.dumps`` fails inside the adapter before any request. It is
    the caller's bad request (raised once, not retried), the breaker shared with every tenant stays closed
    with no failure counted, and another tenant is served at once."""
    upstream.default = Reply.text("served")
    # built without validation: the HTTP edge refuses such depth; this is the adapter's last line
    tool = ToolSpec.model_construct(name="deep", description="d", input_schema=deep_schema(3000))
    bad = plain().model_copy(update={"tools": [tool]})

    async def scenario() -> list[tuple[str, BaseException | None]]:
        async with httpx.AsyncClient() as client:
            router = ProviderRouter(FAST, client, shared_key(upstream))
            out = [await run(router, "attacker", bad) for _ in range(3)]
            out.append(await run(router, "tenant-b", plain()))
            statuses_out.update({s.provider: s for s in await router.status("tenant-b")})
            return out

    statuses_out: dict[str, ProviderStatus] = {}
    *attacks, served = asyncio.run(scenario())
    for _, err in attacks:
        assert isinstance(err, ProviderError) and err.kind == "bad_request", err
        assert "nothing was sent" in err.message and "RecursionError" in err.message
    assert served == ("served", None)
    assert len(upstream.requests) == 1  # only tenant B's: the bad ones never left, and were not retried
    openai = statuses_out["openai"]
    assert openai.state == "closed" and openai.consecutive_failures == 0


def test_shared_breaker_shows_each_tenant_only_its_own_error_and_latency(upstream: FakeOpenAI) -> None:
    """Finding 6: tenant A's upstream 400 quotes A's prompt; tenant B, on the same server key and breaker,
    sees the breaker's state but neither A's error text nor A's latency; A sees its own."""
    upstream.script([Reply.http_error(400, message="Invalid prompt: SECRET patient John Doe"),
                     Reply.text("for A")])

    async def scenario() -> tuple[dict[str, ProviderStatus], dict[str, ProviderStatus], dict[str, ProviderStatus]]:
        async with httpx.AsyncClient() as client:
            router = ProviderRouter(FAST, client, shared_key(upstream))
            _, err = await run(router, "tenant-a", plain("SECRET patient John Doe"))
            assert isinstance(err, ProviderError) and err.kind == "bad_request"
            after_error = ({s.provider: s for s in await router.status("tenant-a")},
                           {s.provider: s for s in await router.status("tenant-b")})
            assert await run(router, "tenant-a", plain()) == ("for A", None)
            return (*after_error, {s.provider: s for s in await router.status("tenant-b")})

    a, b, b_later = asyncio.run(scenario())
    assert a["openai"].last_error is not None and "SECRET" in a["openai"].last_error
    assert a["openai"].breaker_key == b["openai"].breaker_key  # one shared breaker
    assert b["openai"].last_error is None and b["openai"].last_latency_ms is None
    assert b_later["openai"].last_latency_ms is None  # A's time to first token is A's alone
    assert "SECRET" not in str(b) + str(b_later)


def test_tenant_views_per_breaker_are_bounded(upstream: FakeOpenAI) -> None:
    """Per-tenant views of one shared breaker cannot grow without limit (oldest dropped)."""
    from server.providers.breaker_table import MAX_TENANT_VIEWS
    upstream.default = Reply.http_error(400, message="nope")

    async def scenario() -> int:
        async with httpx.AsyncClient() as client:
            router = ProviderRouter(FAST, client, shared_key(upstream))
            for n in range(MAX_TENANT_VIEWS + 5):
                await run(router, f"t{n}", plain())
            (entry,) = [e for _, e in router._breakers.items()]
            return len(entry._views)

    assert asyncio.run(scenario()) == MAX_TENANT_VIEWS


@pytest.mark.parametrize("url", ["http://xn--127-0.0.1", "https://xn--a.example/v1", "http://xn--zz-.x/"])
def test_invalid_idna_host_is_a_refusal_not_a_crash(url: str) -> None:
    """Finding 10: a punycode label that does not decode is PROVIDER_URL_FORBIDDEN, not an IDNAError."""
    with pytest.raises(ProviderUrlForbidden) as refused:
        parse_base_url(url)
    assert refused.value.status == 422 and "not a valid URL" in refused.value.message
