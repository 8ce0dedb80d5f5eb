"""Settings of the agent and provider layers: the failover order reads as users write it, bad names stop
the start, and the values reach the router's configuration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.settings import Settings
from server.wiring import router_config


def test_provider_order_comma_separated_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """OPENANALYST_PROVIDER_ORDER accepts `anthropic,openai` and `["anthropic","openai"]` alike."""
    monkeypatch.setenv("OPENANALYST_PROVIDER_ORDER", "anthropic, openai")
    assert Settings().provider_order == ["anthropic", "openai"]
    monkeypatch.setenv("OPENANALYST_PROVIDER_ORDER", '["gemini","ollama"]')
    assert Settings().provider_order == ["gemini", "ollama"]


def test_unknown_provider_in_order_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt provider name is an error naming the known ones, not a silently skipped entry."""
    monkeypatch.setenv("OPENANALYST_PROVIDER_ORDER", "anthropic,opneai")
    with pytest.raises(ValidationError, match="opneai"):
        Settings()


def test_router_config_follows_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries, Retry-After cap and timeouts set in the environment reach the failover router."""
    monkeypatch.setenv("OPENANALYST_PROVIDER_MAX_RETRIES", "5")
    monkeypatch.setenv("OPENANALYST_PROVIDER_RETRY_AFTER_CAP_S", "3")
    monkeypatch.setenv("OPENANALYST_PROVIDER_READ_TIMEOUT_S", "7.5")
    config = router_config(Settings())
    assert (config.max_retries, config.retry_after_cap_s, config.read_idle_timeout_s) == (5, 3.0, 7.5)
    assert config.provider_order is None
