"""Response models of the health, user, account and provider routes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from server.contract.common import Model
from server.contract.sandbox import Engine
from server.providers.breaker import State


class Health(Model):
    status: Literal["ok"]
    version: str
    uptime_s: float = Field(ge=0)
    engines: list[Engine] | None = Field(default=None, description="The sandbox's container engines and their "
                                                                   "state (null until the sandbox is up).")


class Me(Model):
    id: str
    tenant: str
    role: Literal["owner", "member"]
    created_at: str
    is_owner: bool
    tenancy: Literal["header", "single"]


class Account(Model):
    """The hosted OpenAnalyst account of the calling tenant: every field null when signed out."""

    signed_in: bool
    email: str | None
    plan: str | None = Field(description="The plan's name.")
    credits: float | None = Field(description="Credits available now (plan remaining + purchases remaining).")
    balance: float | None = Field(description="The same figure as `credits`, under the name older clients read.")


class Balance(Model):
    plan_name: str | None
    plan_limit: float | None
    plan_used: float | None
    plan_remaining: float | None
    purchases_total: float | None
    purchases_remaining: float | None
    total_available: float | None


class AuthStatus(Model):
    """The sign-in state; never the token. Signed out: email, expires_at and balance are null."""

    signed_in: bool
    email: str | None
    expires_at: str | None = Field(description="When the stored access token expires (RFC 3339, UTC).")
    balance: Balance | None
    manual_key_present: bool = Field(description="Whether a manual `sk-oa-v1-*` key is configured too.")
    preferred_source: Literal["manual", "oauth"]


class CodeDelivery(Model):
    destination: str | None = Field(description="The masked address the code went to.")
    delivery_medium: str | None


class OtpChallenge(Model):
    """``challenge_id`` goes back in /verify; when ``rate_limited``, nothing was sent: wait ``retry_after_seconds``."""

    challenge_id: str | None
    code_delivery: CodeDelivery | None
    expires_at: int | None = Field(description="Epoch milliseconds.")
    rate_limited: bool
    retry_after_seconds: int | None


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
