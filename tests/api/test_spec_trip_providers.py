"""What spec clients tripped over in provider setup (issue 10 point 4): Ollama added at runtime by its base
URL alone, other providers still needing a key; partial AWS settings leave Bedrock out with a warning that
names the missing variable instead of refusing to start."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from server.app import build_app
from server.providers.registry import credentials_from_env
from server.services import Services
from server.settings import Settings

pytestmark = pytest.mark.anyio


async def test_ollama_added_with_its_base_url_alone(client: httpx.AsyncClient, services: Services) -> None:
    resp = await client.put("/me/providers/ollama", json={"base_url": "http://127.0.0.1:11434"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == "ollama" and resp.json()["api_key"] is None
    listed = (await client.get("/me/providers")).json()["data"]
    assert [(p["name"], p["api_key"], p["base_url"]) for p in listed] == [("ollama", None, "http://127.0.0.1:11434")]
    cred = (await services.credentials.credentials("owner"))["ollama"]
    assert cred.api_key is None and cred.base_url == "http://127.0.0.1:11434"
    # ...and with a key too (an Ollama behind an authenticating proxy), masked as any key.
    keyed = await client.put("/me/providers/ollama", json={"base_url": "http://127.0.0.1:11434",
                                                          "api_key": "ollama-proxy-key-123456"})
    assert keyed.json()["api_key"] == "****3456"


async def test_a_keyed_provider_still_needs_its_key(client: httpx.AsyncClient) -> None:
    for name, body in (("anthropic", {"base_url": "http://127.0.0.1:9"}), ("openai", {}), ("ollama", {})):
        resp = await client.put(f"/me/providers/{name}", json=body)
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "API_KEY_REQUIRED", (name, resp.text)
        assert name in resp.json()["error"]["message"]
    assert (await client.get("/me/providers")).json()["data"] == []


@pytest.mark.parametrize(("env", "missing"), [
    ({"AWS_ACCESS_KEY_ID": "AKIAONLY0000"}, "AWS_SECRET_ACCESS_KEY"),
    ({"AWS_SECRET_ACCESS_KEY": "only-the-secret"}, "AWS_ACCESS_KEY_ID"),
    ({"AWS_SESSION_TOKEN": "only-a-session"}, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
])
async def test_partial_aws_settings_disable_bedrock_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture,
        env: dict[str, str], missing: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = make_settings()  # no ValidationError: the server starts
    assert [c.provider for c in credentials_from_env(settings.provider_env())] == []
    (warning,) = settings.provider_warnings()
    assert warning.startswith("Bedrock is disabled") and f"set {missing} (or AWS_BEARER_TOKEN_BEDROCK)" in warning
    with caplog.at_level(logging.WARNING):
        app = build_app(settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/me/providers")).json()["data"] == []
    assert any(r.getMessage() == warning for r in caplog.records)
    assert not any(v in r.getMessage() for r in caplog.records for v in env.values())  # names, never values


@pytest.mark.parametrize("env", [
    {"AWS_ACCESS_KEY_ID": "AKIAPAIR0000", "AWS_SECRET_ACCESS_KEY": "pair-secret"},
    {"AWS_ACCESS_KEY_ID": "AKIAPAIR0000", "AWS_BEARER_TOKEN_BEDROCK": "bearer-token"},
    {},
])
def test_complete_or_absent_aws_settings_warn_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path)
    assert settings.provider_warnings() == []
    assert [c.provider for c in credentials_from_env(settings.provider_env())] == (["bedrock"] if env else [])
