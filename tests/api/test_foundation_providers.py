"""Provider credentials: env detection, masked listing, add/replace/remove, per tenant, encrypted at rest."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from server.app import build_app
from server.settings import Settings

pytestmark = pytest.mark.anyio
KEY = "sk-ant-api03-SECRETSECRETSECRET-abcd"


async def test_put_list_delete(client: httpx.AsyncClient) -> None:
    """PUT stores a key, GET lists it masked to its last 4, DELETE removes it."""
    resp = await client.put("/me/providers/anthropic", json={"api_key": KEY, "base_url": "http://127.0.0.1:9/"})
    assert resp.status_code == 200
    assert resp.json()["api_key"] == "****abcd" and resp.json()["base_url"] == "http://127.0.0.1:9"
    listed = await client.get("/me/providers")
    assert KEY not in listed.text
    assert listed.json()["data"] == [{"name": "anthropic", "source": "api", "api_key": "****abcd",
                                      "base_url": "http://127.0.0.1:9",
                                      "updated_at": listed.json()["data"][0]["updated_at"]}]
    resp = await client.put("/me/providers/anthropic", json={"api_key": "sk-new-key-0000000000wxyz"})
    assert (await client.get("/me/providers")).json()["data"][0]["api_key"] == "****wxyz"
    assert (await client.delete("/me/providers/anthropic")).status_code == 204
    assert (await client.get("/me/providers")).json()["data"] == []
    again = await client.delete("/me/providers/anthropic")
    assert again.status_code == 404 and again.json()["error"]["code"] == "PROVIDER_NOT_CONFIGURED"


async def test_unknown_and_empty(client: httpx.AsyncClient) -> None:
    """An unknown provider is 404 naming the known ones; an empty or blank key is 422."""
    resp = await client.put("/me/providers/skynet", json={"api_key": "abc"})
    assert resp.status_code == 404 and "anthropic" in resp.json()["error"]["message"]
    assert (await client.delete("/me/providers/skynet")).status_code == 404
    for body in [{"api_key": ""}, {"api_key": "   "}, {}, {"api_key": "k", "extra": 1},
                 {"api_key": "k", "base_url": "ftp://x"}]:
        resp = await client.put("/me/providers/openai", json=body)
        assert resp.status_code == 422, body


async def test_env_credentials(make_settings: Callable[..., Settings], run_app: Any,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Env keys are listed as source env (masked, with their base URL) and an API key overrides one."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-ENVSECRET-9876")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("GOOGLE_API_KEY", "AIzaENVGOOGLEKEY-5555")
    app = build_app(make_settings())
    async with run_app(app) as client:
        data = (await client.get("/me/providers")).json()["data"]
        assert "ENVSECRET" not in str(data)
        assert {(d["name"], d["source"], d["api_key"]) for d in data} == {
            ("openai", "env", "****9876"), ("gemini", "env", "****5555")}
        assert next(d for d in data if d["name"] == "openai")["base_url"] == "http://127.0.0.1:8000/v1"
        await client.put("/me/providers/openai", json={"api_key": "sk-mine-000000001111"})
        creds = await app.state.services.credentials.credentials("owner")
        assert creds["openai"].api_key == "sk-mine-000000001111" and creds["openai"].source == "api"
        assert creds["gemini"].api_key == "AIzaENVGOOGLEKEY-5555"
        deleted = await client.delete("/me/providers/gemini")
        assert deleted.status_code == 409 and deleted.json()["error"]["code"] == "PROVIDER_FROM_ENV"


async def test_tenants_and_env_sharing(make_settings: Callable[..., Settings], run_app: Any,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant's keys are its own; env keys reach tenants only when sharing is on."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env-000000000000")
    async with run_app(build_app(make_settings(share_env_providers_with_tenants=False))) as client:
        await client.put("/me/providers/xai", json={"api_key": "xai-tenant-a-1234567"},
                         headers={"X-Tenant-ID": "a"})
        a = (await client.get("/me/providers", headers={"X-Tenant-ID": "a"})).json()["data"]
        b = (await client.get("/me/providers", headers={"X-Tenant-ID": "b"})).json()["data"]
        owner = (await client.get("/me/providers")).json()["data"]
    assert [d["name"] for d in a] == ["xai"] and b == []
    assert [d["name"] for d in owner] == ["anthropic"]
    async with run_app(build_app(make_settings())) as client:
        b = (await client.get("/me/providers", headers={"X-Tenant-ID": "b"})).json()["data"]
    assert [d["name"] for d in b] == ["anthropic"]


async def test_persisted_encrypted_private(make_settings: Callable[..., Settings], run_app: Any) -> None:
    """Stored keys survive a restart, are not in the database file in clear, and the files are 0600."""
    settings = make_settings()
    async with run_app(build_app(settings)) as client:
        await client.put("/me/providers/openrouter", json={"api_key": "sk-or-v1-PLAINTEXTCANARY42"})
    app = build_app(settings)
    async with run_app(app) as client:
        data = (await client.get("/me/providers")).json()["data"]
        assert data[0]["name"] == "openrouter" and data[0]["api_key"] == "****RY42"
        creds = await app.state.services.credentials.credentials("owner")
        assert creds["openrouter"].api_key == "sk-or-v1-PLAINTEXTCANARY42"
    for name in os.listdir(settings.data_dir):
        path = settings.data_dir / name
        assert b"PLAINTEXTCANARY" not in path.read_bytes(), name
        if name.startswith(("server.db", "secret.key")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700


async def test_bedrock_api_key_is_bearer(client: httpx.AsyncClient, services: Any) -> None:
    """A Bedrock key set over the API is used as a Bedrock API key (bearer auth) in the default region."""
    await client.put("/me/providers/bedrock", json={"api_key": "ABSKbedrockapikey0000"})
    cred = (await services.credentials.credentials("owner"))["bedrock"]
    assert cred.extra == {"auth": "bearer", "region": "us-east-1"} and cred.source == "api"
    assert "ABSK" not in repr(cred)
