"""Settings: provider keys from their usual variables, base URL overrides, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from server.providers.registry import credentials_from_env
from server.settings import Settings


def test_provider_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keys and base URLs are read from the SDKs' variable names; secrets never show in repr."""
    env = {"ANTHROPIC_API_KEY": "sk-ant-1", "ANTHROPIC_BASE_URL": "http://127.0.0.1:1/",
           "GOOGLE_API_KEY": "AIza-google", "XAI_API_KEY": "xai-1", "OPENROUTER_API_KEY": "or-1",
           "OPENANALYST_API_KEY": "sk-oa-v1-x", "OPENAI_API_KEY": "sk-openai",
           "OPENAI_BASE_URL": "http://127.0.0.1:2/v1", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
           "AWS_SECRET_ACCESS_KEY": "s3cr3tvalue", "AWS_REGION": "eu-west-1", "OLLAMA_HOST": "127.0.0.1:11434"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings(data_dir=tmp_path)
    assert "sk-ant-1" not in repr(settings) and "s3cr3tvalue" not in repr(settings)
    creds = {c.provider: c for c in credentials_from_env(settings.provider_env())}
    assert set(creds) == {"anthropic", "gemini", "xai", "openrouter", "openanalyst", "openai", "bedrock", "ollama"}
    assert creds["anthropic"].base_url == "http://127.0.0.1:1" and creds["openai"].base_url == "http://127.0.0.1:2/v1"
    assert creds["gemini"].api_key == "AIza-google"
    assert creds["bedrock"].extra["auth"] == "sigv4" and creds["bedrock"].extra["region"] == "eu-west-1"
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-wins")
    assert Settings(data_dir=tmp_path).provider_env()["GEMINI_API_KEY"] == "gemini-wins"


def test_bedrock_bearer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """AWS_BEARER_TOKEN_BEDROCK alone configures Bedrock with bearer auth."""
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-token")
    creds = credentials_from_env(Settings(data_dir=tmp_path).provider_env())
    assert [(c.provider, c.extra["auth"]) for c in creds] == [("bedrock", "bearer")]


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("OPENANALYST_PORT", "99999", "port"), ("OPENANALYST_TENANCY", "chaos", "tenancy"),
    ("OPENANALYST_MAX_BODY_BYTES", "10", "max_body_bytes"), ("ANTHROPIC_BASE_URL", "ftp://x", "ANTHROPIC_BASE_URL"),
    ("OPENANALYST_CORS_ORIGINS", "http://a.com/path", "cors_origins"),
    ("OPENANALYST_TENANT_POLICIES", '{"sp ace": "ci"}', "tenant_policies"),
])
def test_invalid_settings_name_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str,
                                           fragment: str) -> None:
    """An invalid value is refused with an error that names the setting."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=fragment):
        Settings(data_dir=tmp_path)


def test_cors_forms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CORS origins accept a comma-separated list or JSON."""
    monkeypatch.setenv("OPENANALYST_CORS_ORIGINS", "http://a.com, https://b.org:8443")
    assert Settings(data_dir=tmp_path).cors_origins == ["http://a.com", "https://b.org:8443"]
    monkeypatch.setenv("OPENANALYST_CORS_ORIGINS", '["http://c.net"]')
    assert Settings(data_dir=tmp_path).cors_origins == ["http://c.net"]


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults: port 3080 on 127.0.0.1, header tenancy, data dir under ~/.openanalyst/server."""
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings()
    assert (settings.host, settings.port, settings.tenancy) == ("127.0.0.1", 3080, "header")
    assert settings.data_dir == (tmp_path / ".openanalyst" / "server").resolve()
    assert settings.sse_keepalive_s == 15 and settings.require_api_key is False
