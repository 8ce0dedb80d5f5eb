"""Registry of the eight providers: model families, per-provider model spelling, credentials from the
environment, pricing, and the package's public names."""

from __future__ import annotations

import pytest

import server.providers as providers
from server.providers.credentials import ProviderCredential, redact
from server.providers.pricing import PriceTable, cost_usd
from server.providers.registry import PROVIDERS, can_serve, credentials_from_env, family, translate_model
from server.providers.types import Usage


def test_eight_providers_with_their_wire_formats() -> None:
    """Exactly the eight documented providers exist, each mapped to a wire format."""
    assert list(PROVIDERS) == [
        "openanalyst",
        "anthropic",
        "openai",
        "xai",
        "openrouter",
        "bedrock",
        "gemini",
        "ollama",
    ]
    assert {p: i.wire for p, i in PROVIDERS.items()} == {
        "openanalyst": "anthropic",
        "anthropic": "anthropic",
        "openai": "openai_chat",
        "xai": "openai_chat",
        "openrouter": "openai_chat",
        "bedrock": "bedrock",
        "gemini": "gemini",
        "ollama": "ollama",
    }


@pytest.mark.parametrize(
    ("model", "fam", "servers"),
    [
        ("claude-sonnet-4-5", "claude", {"openanalyst", "anthropic", "bedrock", "openrouter"}),
        ("gpt-4o", "gpt", {"openai", "openrouter"}),
        ("o3-mini", "gpt", {"openai", "openrouter"}),
        ("grok-4", "grok", {"xai", "openrouter"}),
        ("gemini-2.5-pro", "gemini", {"gemini", "openrouter"}),
        ("llama3.2", "other", {"ollama", "openrouter"}),
        ("anthropic/claude-3-5-haiku", "claude", {"openanalyst", "anthropic", "bedrock", "openrouter"}),
    ],
)
def test_which_providers_serve_a_model(model: str, fam: str, servers: set[str]) -> None:
    """Each model family is served by the documented providers only."""
    assert family(model) == fam
    assert {p for p in PROVIDERS if can_serve(p, model)} == servers


@pytest.mark.parametrize(
    ("provider", "model", "wire_id"),
    [
        ("bedrock", "claude-sonnet-4-5", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("bedrock", "claude-sonnet-4-5-20250929", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("bedrock", "anthropic.claude-v2:1", "anthropic.claude-v2:1"),
        ("openrouter", "claude-sonnet-4-5", "anthropic/claude-sonnet-4.5"),
        ("openrouter", "claude-3-5-haiku-20241022", "anthropic/claude-3.5-haiku"),
        ("openrouter", "gpt-4o", "openai/gpt-4o"),
        ("openrouter", "grok-4", "x-ai/grok-4"),
        ("openrouter", "meta-llama/llama-3-70b", "meta-llama/llama-3-70b"),
        ("anthropic", "anthropic/claude-sonnet-4.5", "claude-sonnet-4.5"),
        ("anthropic", "us.anthropic.claude-opus-4-1-20250805-v1:0", "claude-opus-4-1-20250805"),
    ],
)
def test_model_id_translation(provider: str, model: str, wire_id: str) -> None:
    """A model is spelled the way each provider expects it."""
    assert translate_model(provider, model) == wire_id


def test_credentials_from_environment() -> None:
    """Each documented variable yields a credential; Bedrock prefers its bearer token; Ollama needs a host."""
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-1",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/",
        "OPENAI_API_KEY": "sk-2",
        "GOOGLE_API_KEY": "g-3",
        "XAI_API_KEY": "x-4",
        "OPENROUTER_API_KEY": "or-5",
        "OPENANALYST_API_KEY": "sk-oa-v1-6",
        "AWS_ACCESS_KEY_ID": "AKIA7",
        "AWS_SECRET_ACCESS_KEY": "s7",
        "AWS_SESSION_TOKEN": "t7",
        "AWS_REGION": "eu-central-1",
        "OLLAMA_HOST": "0.0.0.0",
    }
    creds = {c.provider: c for c in credentials_from_env(env)}
    assert set(creds) == set(PROVIDERS)
    assert creds["anthropic"].base_url == "http://127.0.0.1:9/" and creds["anthropic"].source == "env"
    assert creds["gemini"].api_key == "g-3"
    assert creds["bedrock"].extra == {
        "auth": "sigv4",
        "region": "eu-central-1",
        "access_key_id": "AKIA7",
        "session_token": "t7",
    }
    assert creds["ollama"].base_url == "http://127.0.0.1:11434" and creds["ollama"].api_key is None
    bearer = {c.provider: c for c in credentials_from_env({**env, "AWS_BEARER_TOKEN_BEDROCK": "bt"})}["bedrock"]
    assert bearer.api_key == "bt" and bearer.extra["auth"] == "bearer"
    assert credentials_from_env({}) == []


def test_credential_repr_and_fingerprint_hide_secrets() -> None:
    """The key and session token never show in repr; the fingerprint changes when the key changes."""
    a = ProviderCredential("bedrock", "SECRET-A-123", None, "api", {"session_token": "TOK-999", "region": "x"})
    b = ProviderCredential("bedrock", "SECRET-B-123", None, "api", {"session_token": "TOK-999", "region": "x"})
    assert "SECRET" not in repr(a) and "TOK-999" not in repr(a) and "'region': 'x'" in repr(a)
    assert a.fingerprint != b.fingerprint and "SECRET" not in a.fingerprint
    assert redact("key sk-ant-api03-abcdefgh and Bearer eyJhbGciOi.x and AIzaSyA1234567890abc") == (
        "key [redacted] and Bearer [redacted] and [redacted]"
    )


def test_pricing_by_model_family_and_overrides() -> None:
    """Costs use list prices by longest model prefix, for provider-specific ids too; overrides win."""
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000)
    assert cost_usd("claude-sonnet-4-5-20250929", usage) == pytest.approx(3.0 + 1.5)
    assert cost_usd("us.anthropic.claude-sonnet-4-5-20250929-v1:0", usage) == pytest.approx(4.5)
    assert cost_usd("openai/gpt-4o-mini", usage) == pytest.approx(0.15 + 0.06)
    assert cost_usd("llama3.2", usage) == 0.0
    assert PriceTable({"llama3.2": (1.0, 1.0)}).cost_usd("llama3.2", usage) == pytest.approx(1.1)


def test_public_names_match_all() -> None:
    """The package exports exactly what __all__ lists, and everything it lists exists."""
    public = {n for n in dir(providers) if not n.startswith("_")}
    modules = {
        "addresses",
        "anthropic",
        "base",
        "bedrock",
        "breaker",
        "breaker_table",
        "config",
        "credentials",
        "eventstream",
        "failover",
        "framing",
        "gemini",
        "guarded_http",
        "ollama",
        "openai_chat",
        "pricing",
        "registry",
        "sigv4",
        "types",
        "urlguard",
    }
    assert set(providers.__all__) == public - modules


def test_messages_round_trip_through_json() -> None:
    """Blocks carry a type tag, so a stored message (model_dump → JSON → model_validate) comes back equal."""
    import json

    from server.providers.types import Message, TextBlock, ToolResultBlock, ToolUseBlock

    message = Message(
        role="assistant",
        blocks=[
            TextBlock(text="hi"),
            ToolUseBlock(id="t1", name="bash", input={"command": "ls"}),
            ToolResultBlock(tool_use_id="t1", content="out", is_error=True),
        ],
    )
    stored = json.loads(json.dumps([b.model_dump() for b in message.blocks]))
    assert Message.model_validate({"role": "assistant", "blocks": stored}) == message
