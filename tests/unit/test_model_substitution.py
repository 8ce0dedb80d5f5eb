"""A named model no configured provider serves is refused (MODEL_NOT_AVAILABLE) instead of being answered by
another vendor's model, unless allow_model_substitution; the attempt always names provider and model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fakes.anthropic import FakeAnthropic
from fakes.openai import FakeOpenAI
from fakes.reply import Reply

from server.providers.config import RouterConfig
from server.providers.credentials import ProviderCredential, StaticCredentials
from server.providers.failover import ModelNotServed, ProviderRouter
from server.providers.types import Attempt, ChatRequest, Message, TextBlock, TextDelta


@pytest.fixture
def anthropic_only() -> Iterator[tuple[FakeAnthropic, StaticCredentials]]:
    with FakeAnthropic() as fake:
        yield fake, StaticCredentials([ProviderCredential("anthropic", "sk-ant-k-0001", fake.base_url, "env")])


def run(creds: StaticCredentials, config: RouterConfig, model: str) -> tuple[str, list[Any]]:
    async def main() -> tuple[str, list[Any]]:
        async with httpx.AsyncClient() as client:
            router = ProviderRouter(config, client, creds)
            req = ChatRequest(model=model, messages=[Message(role="user", blocks=[TextBlock(text="hi")])])
            events = [e async for e in router.stream("t", req)]
        return "".join(e.text for e in events if isinstance(e, TextDelta)), events

    return asyncio.run(main())


def test_unserved_model_is_refused_by_default(anthropic_only: Any) -> None:
    fake, creds = anthropic_only
    with pytest.raises(ModelNotServed) as caught:
        run(creds, RouterConfig(), "gpt-4o")
    err = caught.value
    assert err.status == 400 and err.code == "MODEL_NOT_AVAILABLE"
    assert "'gpt-4o'" in err.message and "anthropic" in err.message
    assert "OPENANALYST_ALLOW_MODEL_SUBSTITUTION" in err.message
    assert fake.requests == []  # nothing was sent to the other vendor


def test_substitution_when_allowed_names_what_answered(anthropic_only: Any) -> None:
    fake, creds = anthropic_only
    fake.script([Reply.text("claude here")])
    text, events = run(creds, RouterConfig(allow_model_substitution=True), "gpt-4o")
    assert text == "claude here"
    assert [(e.provider, e.model) for e in events if isinstance(e, Attempt)] == [("anthropic", "claude-sonnet-4-5")]
    assert fake.requests[0].json()["model"] == "claude-sonnet-4-5"


def test_served_model_only_goes_to_providers_that_serve_it() -> None:
    """Two vendors configured, a Claude model asked: only Anthropic is tried, and its failure is not papered
    over by GPT."""
    with FakeAnthropic() as first, FakeOpenAI() as second:
        creds = StaticCredentials([ProviderCredential("anthropic", "sk-ant-k-0001", first.base_url, "env"),
                                   ProviderCredential("openai", "sk-oai-k-0002", second.v1, "env")])
        first.script([Reply.text("from claude")])
        text, events = run(creds, RouterConfig(), "claude-sonnet-4-5")
        assert text == "from claude"
        assert [(e.provider, e.model) for e in events if isinstance(e, Attempt)] == [
            ("anthropic", "claude-sonnet-4-5")]
        router = ProviderRouter(RouterConfig(), httpx.AsyncClient(), creds)
        plan = router.plan("claude-sonnet-4-5", asyncio.run(creds.credentials("t")))
        assert plan == [("anthropic", "claude-sonnet-4-5")]
        assert router.plan("", asyncio.run(creds.credentials("t"))) == [("anthropic", "claude-sonnet-4-5"),
                                                                       ("openai", "gpt-4o")]
        assert second.requests == []
