"""The eight named providers: their wire format, default base URL and model, which model families each can
serve, and how a model name is spelled at each (Bedrock ``anthropic.claude-…``, OpenRouter
``anthropic/claude-…``).

``credentials_from_env`` turns a mapping of environment variables (handed over by ``server.settings``, the
only reader of the environment) into credentials; ``make_adapter`` builds the adapter for a credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import httpx

from server.providers.anthropic import AnthropicAdapter
from server.providers.base import HttpAdapter, Timeouts
from server.providers.bedrock import DEFAULT_REGION, BedrockAdapter, default_base_url
from server.providers.credentials import CredentialLookup, ProviderCredential, StaticCredentials
from server.providers.gemini import GeminiAdapter
from server.providers.ollama import OllamaAdapter
from server.providers.openai_chat import OpenAIChatAdapter

__all__ = ["PROVIDERS", "CredentialLookup", "ProviderCredential", "ProviderInfo", "StaticCredentials",
           "can_serve", "credentials_from_env", "family", "make_adapter", "translate_model"]

Wire = Literal["anthropic", "openai_chat", "gemini", "ollama", "bedrock"]
Family = Literal["claude", "gpt", "grok", "gemini", "other"]


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    wire: Wire
    base_url: str
    default_model: str
    families: frozenset[str]
    key_env: tuple[str, ...]
    base_url_env: str


PROVIDERS: dict[str, ProviderInfo] = {p.name: p for p in (
    ProviderInfo("openanalyst", "anthropic", "https://api.openanalyst.com", "claude-sonnet-4-5",
                 frozenset({"claude"}), ("OPENANALYST_API_KEY",), "OPENANALYST_BASE_URL"),
    ProviderInfo("anthropic", "anthropic", "https://api.anthropic.com", "claude-sonnet-4-5",
                 frozenset({"claude"}), ("ANTHROPIC_API_KEY",), "ANTHROPIC_BASE_URL"),
    ProviderInfo("openai", "openai_chat", "https://api.openai.com/v1", "gpt-4o",
                 frozenset({"gpt"}), ("OPENAI_API_KEY",), "OPENAI_BASE_URL"),
    ProviderInfo("xai", "openai_chat", "https://api.x.ai/v1", "grok-4",
                 frozenset({"grok"}), ("XAI_API_KEY",), "XAI_BASE_URL"),
    ProviderInfo("openrouter", "openai_chat", "https://openrouter.ai/api/v1", "anthropic/claude-sonnet-4.5",
                 frozenset({"claude", "gpt", "grok", "gemini", "other"}), ("OPENROUTER_API_KEY",),
                 "OPENROUTER_BASE_URL"),
    ProviderInfo("bedrock", "bedrock", default_base_url(DEFAULT_REGION),
                 "us.anthropic.claude-sonnet-4-5-20250929-v1:0", frozenset({"claude"}),
                 ("AWS_BEARER_TOKEN_BEDROCK", "AWS_SECRET_ACCESS_KEY"), "BEDROCK_BASE_URL"),
    ProviderInfo("gemini", "gemini", "https://generativelanguage.googleapis.com", "gemini-2.5-flash",
                 frozenset({"gemini"}), ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "GEMINI_BASE_URL"),
    ProviderInfo("ollama", "ollama", "http://127.0.0.1:11434", "llama3.2",
                 frozenset({"other"}), (), "OLLAMA_HOST"),
)}

ADAPTERS: dict[Wire, type[HttpAdapter]] = {"anthropic": AnthropicAdapter, "openai_chat": OpenAIChatAdapter,
                                           "gemini": GeminiAdapter, "ollama": OllamaAdapter,
                                           "bedrock": BedrockAdapter}
OPENROUTER_VENDOR = {"claude": "anthropic", "gpt": "openai", "grok": "x-ai", "gemini": "google"}
BEDROCK_IDS = {
    "claude-sonnet-4-5": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "claude-sonnet-4": "us.anthropic.claude-sonnet-4-20250514-v1:0",
    "claude-opus-4-1": "us.anthropic.claude-opus-4-1-20250805-v1:0",
    "claude-haiku-4-5": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
    "claude-3-5-haiku": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
    "claude-3-7-sonnet": "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
}
_BEDROCK_SHAPE = re.compile(r"^(?:(?:us|eu|apac|global)\.)?anthropic\.(?P<name>.+?)(?:-v\d+(?::\d+)?)?$")
_DATE = re.compile(r"-\d{8}$")
_BEDROCK_OTHER = re.compile(r"^(?:(?:us|eu|apac|global)\.)?(?:amazon|meta|mistral|cohere|ai21|deepseek|qwen|"
                            r"openai|writer|twelvelabs)\.")


def canonical(model: str) -> str:
    """The vendor's own spelling: ``anthropic/claude-x`` and ``us.anthropic.claude-x-v1:0`` → ``claude-x``."""
    if "/" in model:
        vendor, _, rest = model.partition("/")
        if vendor in OPENROUTER_VENDOR.values():
            model = rest
    match = _BEDROCK_SHAPE.match(model)
    return match.group("name") if match else model


def family(model: str) -> Family:
    name = canonical(model).lower()
    if name.startswith("claude"):
        return "claude"
    if name.startswith(("gpt-", "chatgpt", "o1", "o3", "o4")):
        return "gpt"
    if name.startswith("grok"):
        return "grok"
    if name.startswith("gemini"):
        return "gemini"
    return "other"


def can_serve(provider: str, model: str) -> bool:
    info = PROVIDERS[provider]
    if provider == "bedrock" and _BEDROCK_OTHER.match(model):
        return True  # a Bedrock model id such as amazon.nova-pro-v1:0
    return family(model) in info.families


def translate_model(provider: str, model: str) -> str:
    """The model's name as ``provider`` spells it."""
    name = canonical(model)
    if provider == "openrouter":
        if "/" in model:
            return model
        fam = family(model)
        if fam == "claude":  # OpenRouter writes versions with a dot and no date: claude-sonnet-4.5
            name = re.sub(r"(\d)-(\d)(?=$|-)", r"\1.\2", _DATE.sub("", name), count=1)
        vendor = OPENROUTER_VENDOR.get(fam)
        return f"{vendor}/{name}" if vendor else name
    if provider == "bedrock":
        if _BEDROCK_OTHER.match(model) or _BEDROCK_SHAPE.match(model):
            return model
        return BEDROCK_IDS.get(name) or BEDROCK_IDS.get(_DATE.sub("", name)) or f"us.anthropic.{name}-v1:0"
    return name


def base_url(provider: str, credential: ProviderCredential) -> str:
    if credential.base_url:
        return credential.base_url
    if provider == "bedrock":
        return default_base_url(str(credential.extra.get("region") or DEFAULT_REGION))
    return PROVIDERS[provider].base_url


def make_adapter(provider: str, client: httpx.AsyncClient, credential: ProviderCredential,
                 timeouts: Timeouts | None = None) -> HttpAdapter:
    cls = ADAPTERS[PROVIDERS[provider].wire]
    return cls(provider, client, credential, base_url(provider, credential), timeouts)


def _ollama_url(host: str) -> str:
    if "://" not in host:
        host = "http://" + host
    host = host.replace("://0.0.0.0", "://127.0.0.1").rstrip("/")
    return host if re.search(r":\d+$", host) else host + ":11434"


def credentials_from_env(env: Mapping[str, str]) -> list[ProviderCredential]:
    """Credentials for every provider whose variables are set (Ollama: when OLLAMA_HOST is set)."""
    out: list[ProviderCredential] = []
    for info in PROVIDERS.values():
        base = env.get(info.base_url_env) or None
        if info.name == "bedrock":
            region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
            if env.get("AWS_BEARER_TOKEN_BEDROCK"):
                out.append(ProviderCredential("bedrock", env["AWS_BEARER_TOKEN_BEDROCK"], base, "env",
                                              {"auth": "bearer", "region": region}))
            elif env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
                extra = {"auth": "sigv4", "region": region, "access_key_id": env["AWS_ACCESS_KEY_ID"]}
                if env.get("AWS_SESSION_TOKEN"):
                    extra["session_token"] = env["AWS_SESSION_TOKEN"]
                out.append(ProviderCredential("bedrock", env["AWS_SECRET_ACCESS_KEY"], base, "env", extra))
        elif info.name == "ollama":
            if env.get("OLLAMA_HOST"):
                out.append(ProviderCredential("ollama", env.get("OLLAMA_API_KEY") or None,
                                              _ollama_url(env["OLLAMA_HOST"]), "env"))
        else:
            key = next((env[k] for k in info.key_env if env.get(k)), None)
            if key:
                out.append(ProviderCredential(info.name, key, base, "env"))
    return out
