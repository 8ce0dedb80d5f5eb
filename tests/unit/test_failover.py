"""ProviderRouter against two real fake providers (Anthropic wire first, OpenAI wire second): retries with
Retry-After, failover before and after the first content, auth failures, all-down, nothing configured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fakes import FakeAnthropic, FakeOpenAI, Reply
from fakes.harness import request

from server.providers.config import RouterConfig
from server.providers.credentials import ProviderCredential, StaticCredentials
from server.providers.failover import (
    AllProvidersFailed,
    NoProviderConfigured,
    ProviderRouter,
    ProviderStatus,
)
from server.providers.types import Attempt, Discarded, ProviderError, TextDelta, ToolCall, Usage

# These tests are about failover itself, across vendors too: substitution on (test_model_substitution.py
# covers it off, the default).
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "allow_model_substitution": True}


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fakes() -> Iterator[tuple[FakeAnthropic, FakeOpenAI]]:
    with FakeAnthropic() as first, FakeOpenAI() as second:
        yield first, second


def creds(fakes: tuple[FakeAnthropic, FakeOpenAI], key: str = "sk-ant-first-key-1") -> StaticCredentials:
    first, second = fakes
    return StaticCredentials(
        [
            ProviderCredential("anthropic", key, first.base_url, "api"),
            ProviderCredential("openai", "sk-openai-key-2", second.v1, "env"),
        ]
    )


def turn(
    router_args: tuple[StaticCredentials, RouterConfig],
    model: str = "claude-sonnet-4-5",
    clock: Clock | None = None,
    turns: int = 1,
    status_out: dict[str, ProviderStatus] | None = None,
) -> list[tuple[str, list[Any], BaseException | None]]:
    """Run ``turns`` turns through one router; per turn: the text as the agent keeps it, events, error."""
    lookup, config = router_args

    async def main() -> list[tuple[str, list[Any], BaseException | None]]:
        out = []
        async with httpx.AsyncClient() as client:
            router = ProviderRouter(config, client, lookup, **({"clock": clock} if clock else {}))
            for _ in range(turns):
                parts: list[str] = []
                events: list[Any] = []
                error: BaseException | None = None
                try:
                    async for event in router.stream("tenant-1", request(model)):
                        events.append(event)
                        if isinstance(event, TextDelta):
                            parts.append(event.text)
                        elif isinstance(event, Discarded):
                            parts.clear()
                except (ProviderError, AllProvidersFailed, NoProviderConfigured) as exc:
                    error = exc
                out.append(("".join(parts), events, error))
            if status_out is not None:
                status_out.update({s.provider: s for s in await router.status("tenant-1")})
        return out

    return asyncio.run(main())


def attempts(events: list[Any]) -> list[tuple[str, int]]:
    return [(e.provider, e.attempt) for e in events if isinstance(e, Attempt)]


def test_429_with_retry_after_is_waited_then_succeeds(fakes: Any) -> None:
    """A 429 with Retry-After: 1 is retried on the same provider after about one second, not sooner."""
    first, second = fakes
    first.script([Reply.http_error(429, retry_after=1), Reply.text("Hello there.")])
    ((text, events, err),) = turn((creds(fakes), RouterConfig(**FAST)))
    assert err is None and text == "Hello there."
    assert attempts(events) == [("anthropic", 1), ("anthropic", 2)]
    waited = first.requests[1].at - first.requests[0].at
    assert 0.95 <= waited < 3.0
    assert second.requests == []


def test_retry_after_beyond_cap_moves_on_at_once(fakes: Any) -> None:
    """A Retry-After longer than the cap is not waited for: the next provider answers immediately."""
    first, second = fakes
    first.script([Reply.http_error(429, retry_after=120)])
    second.script([Reply.text("From OpenAI.")])
    started = time.monotonic()
    ((text, events, err),) = turn((creds(fakes), RouterConfig(retry_after_cap_s=5, **FAST)))
    assert err is None and text == "From OpenAI." and time.monotonic() - started < 2.0
    assert attempts(events) == [("anthropic", 1), ("openai", 1)]
    assert second.requests[0].json()["model"] == "gpt-4o"  # the other family's default model


def test_529_then_next_provider_gives_one_clean_answer(fakes: Any) -> None:
    """529 on every try of the first provider: the consumer sees Attempt events and only the second's text."""
    first, second = fakes
    first.script([Reply.http_error(529)] * 2)
    second.script([Reply.text("Clean answer.", usage=(40, 4))])
    ((text, events, err),) = turn((creds(fakes), RouterConfig(max_retries=1, **FAST)))
    assert err is None and text == "Clean answer."
    assert attempts(events) == [("anthropic", 1), ("anthropic", 2), ("openai", 1)]
    assert not any(isinstance(e, Discarded) for e in events)
    assert [e for e in events if isinstance(e, Usage)] == [Usage(input_tokens=40, output_tokens=4)]
    assert len(first.requests) == 2


def test_in_stream_overload_before_content_is_invisible(fakes: Any) -> None:
    """An overloaded_error inside the stream before any content fails over without a Discarded event."""
    first, second = fakes
    first.script([Reply.stream_error("overloaded")])
    second.script([Reply.tool_call("bash", {"command": "ls"}, text="Checking.")])
    ((text, events, err),) = turn((creds(fakes), RouterConfig(max_retries=0, **FAST)))
    assert err is None and text == "Checking."
    assert [type(e).__name__ for e in events if not isinstance(e, TextDelta)] == [
        "Attempt",
        "Attempt",
        "ToolCall",
        "Usage",
        "Stop",
    ]
    (call,) = [e for e in events if isinstance(e, ToolCall)]
    assert call.arguments == {"command": "ls"}


def test_failure_after_first_delta_is_discarded_and_redone(fakes: Any) -> None:
    """Content already streamed by a failing provider is followed by Discarded and the full next answer."""
    first, second = fakes
    first.script([Reply.stream_error("overloaded", after_text="The answer is"), Reply.text("never used")])
    second.script([Reply.text("The answer is 42.")])
    ((text, events, err),) = turn((creds(fakes), RouterConfig(**FAST)))
    assert err is None and text == "The answer is 42."
    kinds = [type(e).__name__ for e in events]
    cut = kinds.index("Discarded")
    assert events[cut].provider == "anthropic" and "overloaded" in events[cut].reason
    assert "TextDelta" in kinds[:cut] and kinds[cut + 1] == "Attempt"
    assert "".join(e.text for e in events[cut:] if isinstance(e, TextDelta)) == "The answer is 42."
    assert len(first.requests) == 1  # not retried on the same provider after content


def test_auth_failure_skips_provider_until_key_changes(fakes: Any) -> None:
    """A 401 moves on without retrying; later turns skip that key; a new key is tried again."""
    first, second = fakes
    first.script([Reply.http_error(401)])
    second.script([Reply.text("one"), Reply.text("two")])
    lookup = creds(fakes)
    config = RouterConfig(max_retries=3, **FAST)
    status: dict[str, ProviderStatus] = {}
    results = turn((lookup, config), turns=2, status_out=status)
    assert [r[0] for r in results] == ["one", "two"]
    assert len(first.requests) == 1
    assert attempts(results[1][1]) == [("openai", 1)]
    assert status["anthropic"].credential_rejected and status["anthropic"].configured
    assert status["anthropic"].state == "open"
    assert "sk-ant-first-key-1" not in (status["anthropic"].last_error or "")
    # same router state is per router; a new router with a changed key tries anthropic again
    lookup.set(ProviderCredential("anthropic", "sk-ant-rotated-key", first.base_url, "api"))
    first.script([Reply.text("after rotation")])
    ((text, _, _),) = turn((lookup, config))
    assert text == "after rotation"


def test_rejected_key_change_within_one_router(fakes: Any) -> None:
    """Within one router, the rejected key stays skipped and the rotated key is used at once."""
    first, second = fakes
    first.script([Reply.http_error(403), Reply.text("rotated ok")])
    second.script([Reply.text("fallback")])
    lookup = creds(fakes)

    async def main() -> list[str]:
        async with httpx.AsyncClient() as client:
            router = ProviderRouter(RouterConfig(**FAST), client, lookup)
            texts = []
            for rotate in (False, True):
                if rotate:
                    lookup.set(ProviderCredential("anthropic", "sk-ant-new-key-9", first.base_url, "api"))
                texts.append(
                    "".join(
                        [
                            e.text
                            async for e in router.stream("t", request("claude-sonnet-4-5"))
                            if isinstance(e, TextDelta)
                        ]
                    )
                )
            return texts

    assert asyncio.run(main()) == ["fallback", "rotated ok"]
    assert first.requests[1].headers["x-api-key"] == "sk-ant-new-key-9"


def test_every_provider_down_lists_each(fakes: Any) -> None:
    """When every provider fails, AllProvidersFailed names each one with its error."""
    first, second = fakes
    first.script([Reply.http_error(503)])
    second.script([Reply.http_error(401)])
    ((_, _, err),) = turn((creds(fakes), RouterConfig(max_retries=0, **FAST)))
    assert isinstance(err, AllProvidersFailed)
    assert [p for p, _ in err.errors] == ["anthropic", "openai"]
    assert "503" in err.errors[0][1] and "auth" in err.errors[1][1]
    assert err.code == "ALL_PROVIDERS_FAILED" and err.status == 502


def test_nothing_configured_says_how_to_add_a_provider() -> None:
    """With no credentials the router raises NoProviderConfigured naming the env var and the API route."""
    ((_, events, err),) = turn((StaticCredentials([]), RouterConfig()))
    assert events == [] and isinstance(err, NoProviderConfigured)
    assert "ANTHROPIC_API_KEY" in err.message and "PUT /me/providers/" in err.message


def test_bad_request_is_raised_not_failed_over(fakes: Any) -> None:
    """A 400 is the request's fault: raised at once, never retried or sent to another provider."""
    first, second = fakes
    first.script([Reply.http_error(400, message="messages: field required")])
    ((_, _, err),) = turn((creds(fakes), RouterConfig(**FAST)))
    assert isinstance(err, ProviderError) and err.kind == "bad_request"
    assert len(first.requests) == 1 and second.requests == []


def test_breaker_opens_skips_and_recovers_after_cooldown(fakes: Any) -> None:
    """After K failures the provider is skipped without a request; after the cooldown a probe closes it."""
    first, second = fakes
    clock = Clock()
    lookup = creds(fakes)
    config = RouterConfig(max_retries=0, breaker_failure_threshold=2, breaker_cooldown_s=30, **FAST)
    first.script([Reply.http_error(500), Reply.http_error(500), Reply.text("recovered")])
    second.script([Reply.text("b1"), Reply.text("b2"), Reply.text("b3")])

    async def main() -> list[str]:
        async with httpx.AsyncClient() as client:
            router = ProviderRouter(config, client, lookup, clock=clock)
            texts = []
            for advance in (0, 0, 0, 30):
                clock.now += advance
                texts.append(
                    "".join(
                        [
                            e.text
                            async for e in router.stream("t", request("claude-sonnet-4-5"))
                            if isinstance(e, TextDelta)
                        ]
                    )
                )
                if len(texts) == 3:
                    status = {s.provider: s for s in await router.status("t")}
                    assert status["anthropic"].state == "open"
                    assert status["anthropic"].consecutive_failures == 2
                    assert "500" in (status["anthropic"].last_error or "")
            status = {s.provider: s for s in await router.status("t")}
            assert status["anthropic"].state == "closed" and status["anthropic"].last_error is None
            assert status["anthropic"].last_latency_ms is not None
            assert status["gemini"].configured is False
            return texts

    assert asyncio.run(main()) == ["b1", "b2", "b3", "recovered"]
    assert len(first.requests) == 3  # the third turn skipped anthropic without a request


def test_provider_order_and_default_models_from_config(fakes: Any) -> None:
    """provider_order overrides the family-first order; an unknown name in it is refused."""
    _, second = fakes
    second.script([Reply.text("openai first")])
    config = RouterConfig(provider_order=["openai", "anthropic"], default_models={"openai": "gpt-4.1"}, **FAST)
    ((text, events, _),) = turn((creds(fakes), config))
    assert text == "openai first" and attempts(events) == [("openai", 1)]
    assert second.requests[0].json()["model"] == "gpt-4.1"
    with pytest.raises(ValueError, match="unknown provider"):
        RouterConfig(provider_order=["nope"])


def test_empty_model_uses_each_providers_default(fakes: Any) -> None:
    """No model requested: each provider is asked for its own default model, in the registry order."""
    first, _ = fakes
    first.script([Reply.text("hi")])
    ((_, events, _),) = turn((creds(fakes), RouterConfig(**FAST)), model="")
    assert [(e.provider, e.model) for e in events if isinstance(e, Attempt)] == [("anthropic", "claude-sonnet-4-5")]


def test_consumer_leaving_mid_probe_frees_the_breaker(fakes: Any) -> None:
    """A caller that stops reading during a half-open probe leaves the breaker free for the next probe."""
    first, second = fakes
    clock = Clock()
    config = RouterConfig(max_retries=0, breaker_failure_threshold=1, breaker_cooldown_s=10, **FAST)
    first.script([Reply.http_error(500), Reply.text("a long answer that nobody reads"), Reply.text("probe")])
    second.script([Reply.text("fallback")])

    async def main() -> list[str]:
        async with httpx.AsyncClient() as client:
            router = ProviderRouter(config, client, creds(fakes), clock=clock)
            seen = [
                e.provider async for e in router.stream("t", request("claude-sonnet-4-5")) if isinstance(e, Attempt)
            ]
            clock.now += 10
            stream = router.stream("t", request("claude-sonnet-4-5"))
            async for event in stream:
                if isinstance(event, TextDelta):
                    break
            await stream.aclose()
            states = [s.state for s in await router.status("t") if s.provider == "anthropic"]
            text = "".join(
                [e.text async for e in router.stream("t", request("claude-sonnet-4-5")) if isinstance(e, TextDelta)]
            )
            return [*seen, *states, text]

    assert asyncio.run(main()) == ["anthropic", "openai", "half_open", "probe"]


def test_model_spelled_per_provider_across_wire_formats() -> None:
    """A Claude request goes to OpenRouter as anthropic/…, then to Bedrock as a Bedrock id, then xAI's default."""
    from fakes import FakeBedrock

    from server.providers.registry import credentials_from_env

    with FakeBedrock() as bedrock, FakeOpenAI() as openrouter, FakeOpenAI() as xai:
        env = {
            "AWS_BEARER_TOKEN_BEDROCK": "bedrock-token-1",
            "BEDROCK_BASE_URL": bedrock.base_url,
            "OPENROUTER_API_KEY": "sk-or-2",
            "OPENROUTER_BASE_URL": openrouter.v1,
            "XAI_API_KEY": "xai-3",
            "XAI_BASE_URL": xai.v1,
        }
        bedrock.script([Reply.http_error(503)])
        openrouter.script([Reply.http_error(502)])
        xai.script([Reply.text("grok here")])
        lookup = StaticCredentials(credentials_from_env(env))
        ((text, events, err),) = turn((lookup, RouterConfig(max_retries=0, **FAST)))
        assert err is None and text == "grok here"
        assert [(e.provider, e.model) for e in events if isinstance(e, Attempt)] == [
            ("openrouter", "anthropic/claude-sonnet-4.5"),
            ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            ("xai", "grok-4"),
        ]
        assert bedrock.requests[0].path.startswith("/model/us.anthropic.claude-sonnet-4-5")
        assert openrouter.requests[0].json()["model"] == "anthropic/claude-sonnet-4.5"
        assert xai.requests[0].headers["authorization"] == "Bearer xai-3"


def test_model_not_found_moves_on_without_retry_or_breaker_count(fakes: Any) -> None:
    """A 404 (model unknown at this provider) goes to the next provider at once and is not a health failure."""
    first, second = fakes
    first.script([Reply.http_error(404, "bad_request", message="model: claude-x not found")])
    second.script([Reply.text("served elsewhere")])
    status: dict[str, ProviderStatus] = {}
    ((text, events, _),) = turn((creds(fakes), RouterConfig(max_retries=3, **FAST)), status_out=status)
    assert text == "served elsewhere" and attempts(events) == [("anthropic", 1), ("openai", 1)]
    assert len(first.requests) == 1 and status["anthropic"].consecutive_failures == 0


def test_adapter_surprise_fails_over_instead_of_crashing(fakes: Any) -> None:
    """A wire event the adapter cannot make sense of (tool input not an object) fails over, never crashes."""
    first, second = fakes
    raw = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":1}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"tool_use","id":"t1","name":"bash","input":"not an object"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    )
    first.script([Reply(raw_body=raw)])
    second.script([Reply.text("sane answer")])
    ((text, events, err),) = turn((creds(fakes), RouterConfig(max_retries=0, **FAST)))
    assert err is None and text == "sane answer"
    assert attempts(events) == [("anthropic", 1), ("openai", 1)]


class PerTenant:
    """A credential lookup with different credentials per tenant (what the server's store does)."""

    def __init__(self, by_tenant: dict[str, list[ProviderCredential]]) -> None:
        self.by_tenant = by_tenant

    async def credentials(self, tenant_id: str) -> dict[str, ProviderCredential]:
        return {c.provider: c for c in self.by_tenant.get(tenant_id, [])}


async def text_of(router: ProviderRouter, tenant: str) -> tuple[str, list[tuple[str, int]], BaseException | None]:
    parts: list[str] = []
    events: list[Any] = []
    try:
        async for event in router.stream(tenant, request("claude-sonnet-4-5")):
            events.append(event)
            if isinstance(event, TextDelta):
                parts.append(event.text)
    except AllProvidersFailed as exc:
        return "".join(parts), attempts(events), exc
    return "".join(parts), attempts(events), None


def test_one_tenants_failing_gateway_leaves_other_tenants_circuit_closed() -> None:
    """Tenant a's gateway answers 500s until a's breaker opens; tenant b, on its own gateway and key for the
    same provider, keeps being served, and each sees only its own breaker, keyed without the secret."""
    with FakeAnthropic() as gateway_a, FakeAnthropic() as gateway_b:
        gateway_a.default = Reply.http_error(500)
        gateway_b.default = Reply.text("b is served")
        lookup = PerTenant({"a": [ProviderCredential("anthropic", "sk-ant-tenant-a-1111", gateway_a.base_url, "api")],
                            "b": [ProviderCredential("anthropic", "sk-ant-tenant-b-2222", gateway_b.base_url, "api")]})
        config = RouterConfig(max_retries=0, breaker_failure_threshold=2, breaker_cooldown_s=60, **FAST)

        async def main() -> tuple[list[Any], dict[str, ProviderStatus], dict[str, ProviderStatus]]:
            async with httpx.AsyncClient() as client:
                router = ProviderRouter(config, client, lookup, clock=Clock())
                results = [await text_of(router, t) for t in ("a", "b", "a", "b", "a", "b")]
                a = {s.provider: s for s in await router.status("a")}
                b = {s.provider: s for s in await router.status("b")}
                return results, a, b

        results, status_a, status_b = asyncio.run(main())
    assert [r[0] for r in results[1::2]] == ["b is served"] * 3
    assert all(isinstance(r[2], AllProvidersFailed) for r in results[0::2])
    assert "circuit open" in results[4][2].errors[0][1]  # type: ignore[union-attr]
    assert len(gateway_a.requests) == 2 and len(gateway_b.requests) == 3
    assert status_a["anthropic"].state == "open" and status_a["anthropic"].consecutive_failures == 2
    assert status_b["anthropic"].state == "closed" and status_b["anthropic"].last_error is None
    assert status_a["anthropic"].breaker_key != status_b["anthropic"].breaker_key
    shown = str([s.model_dump() for s in (*status_a.values(), *status_b.values())])
    assert "sk-ant-tenant" not in shown and "1111" not in shown


def test_tenants_sharing_the_servers_credential_share_its_breaker(fakes: Any) -> None:
    """Tenants on the server's own credential reach one upstream: its breaker, opened by one tenant's turns,
    is open for the other too (one upstream, one breaker)."""
    first, second = fakes
    first.default = Reply.http_error(503)
    second.default = Reply.text("fallback")
    shared = creds(fakes)
    config = RouterConfig(max_retries=0, breaker_failure_threshold=2, breaker_cooldown_s=60, **FAST)

    async def main() -> list[tuple[str, list[tuple[str, int]], BaseException | None]]:
        async with httpx.AsyncClient() as client:
            router = ProviderRouter(config, client, shared, clock=Clock())
            out = [await text_of(router, t) for t in ("a", "a", "b")]
            keys = {t: {s.provider: s.breaker_key for s in await router.status(t)} for t in ("a", "b")}
            assert keys["a"] == keys["b"]
            return out

    results = asyncio.run(main())
    assert results[2][1] == [("openai", 1)] and len(first.requests) == 2


def test_tenant_url_refused_at_connection_fails_over_and_owner_is_trusted() -> None:
    """A tenant's own credential goes through the guarded client: its loopback gateway is refused without a
    request and the turn moves on at once (not a breaker failure); the owner's same credential is trusted."""
    from server.providers.addresses import UrlPolicy
    from server.providers.guarded_http import guarded_client

    with FakeAnthropic() as gateway, FakeOpenAI() as server_provider:
        gateway.default = Reply.text("from the loopback gateway")
        server_provider.default = Reply.text("from the server's provider")
        own = ProviderCredential("anthropic", "sk-ant-own-key-3333", gateway.base_url, "api")
        env = ProviderCredential("openai", "sk-openai-env-4444", server_provider.v1, "env")
        lookup = PerTenant({"t": [own, env], "owner": [own, env]})

        async def main() -> list[Any]:
            async with httpx.AsyncClient() as client, guarded_client(UrlPolicy()) as guarded:
                router = ProviderRouter(RouterConfig(max_retries=3, **FAST), client, lookup, tenant_client=guarded,
                                        trusted_tenants={"owner"})
                tenant = await text_of(router, "t")
                status = {s.provider: s for s in await router.status("t")}
                return [tenant, status["anthropic"], await text_of(router, "owner")]

        (text, tried, _), status, owner = asyncio.run(main())
    assert text == "from the server's provider" and tried == [("anthropic", 1), ("openai", 1)]
    assert status.consecutive_failures == 0 and status.state == "closed"
    assert owner[0] == "from the loopback gateway" and len(gateway.requests) == 1
