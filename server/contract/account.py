"""Response models of the health, user, account and provider routes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from server.contract.common import Model
from server.providers.breaker import State


class Health(Model):
    status: Literal["ok"]
    version: str
    uptime_s: float = Field(ge=0)


class Me(Model):
    id: str
    tenant: str
    role: Literal["owner", "member"]
    created_at: str
    is_owner: bool
    tenancy: Literal["header", "single"]


class Account(Model):
    """The hosted OpenAnalyst account: signed out (every field null) until the account flow exists."""

    signed_in: bool
    email: str | None
    plan: str | None
    credits: float | None
    balance: float | None


class AuthStatus(Model):
    signed_in: bool
    email: str | None
    expires_at: str | None
    balance: float | None
    manual_key_present: bool
    preferred_source: Literal["manual", "oauth"]


class ProviderEntry(Model):
    """One configured provider credential; the key is masked, never returned whole."""

    name: str
    source: Literal["env", "api"] = Field(description="`env`: from the server's environment; `api`: stored.")
    api_key: str | None = Field(description="Masked key.")
    base_url: str | None
    updated_at: str | None


class ProviderList(Model):
    data: list[ProviderEntry]


class ProviderStatus(Model):
    """A provider as the calling tenant reaches it: the breaker of its own credential."""

    provider: str
    configured: bool
    breaker_key: str | None = Field(description="A keyed hash naming the breaker, never the key.")
    state: State
    consecutive_failures: int = Field(ge=0)
    credential_rejected: bool
    last_error: str | None
    last_latency_ms: float | None


class ProviderStatusList(Model):
    data: list[ProviderStatus]
