"""Plain configuration objects for the provider layer; ``server.settings`` fills them from its own fields
(this package never reads the environment)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.providers.base import Timeouts
from server.providers.breaker import BreakerConfig
from server.providers.registry import PROVIDERS


class RouterConfig(BaseModel):
    """Failover policy: order, retries, waits, timeouts and breaker thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider_order: list[str] | None = Field(
        default=None, description="Exact provider order; unset = providers able to serve the model first.")
    default_models: dict[str, str] = Field(default_factory=dict, description="Per-provider default model.")
    allow_model_substitution: bool = Field(
        default=False, description="A named model no configured provider serves may be answered by another "
                                   "provider's default model; off: MODEL_NOT_AVAILABLE.")
    max_retries: int = Field(default=2, ge=0, le=10, description="Retries on one provider before the next.")
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    retry_after_cap_s: float = Field(
        default=30.0, ge=0, description="Longest Retry-After honoured; longer → next provider at once.")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_idle_timeout_s: float = Field(default=120.0, gt=0, description="Longest silence inside a stream.")
    breaker_failure_threshold: int = Field(default=3, ge=1)
    breaker_cooldown_s: float = Field(default=5.0, ge=0)
    breaker_max_cooldown_s: float = Field(default=300.0, ge=0)
    breaker_max_entries: int = Field(default=1024, ge=1, description="Breakers kept (one per upstream identity).")
    breaker_idle_ttl_s: float = Field(default=3600.0, gt=0, description="An unused breaker is forgotten after this.")

    @field_validator("provider_order")
    @classmethod
    def _known(cls, order: list[str] | None) -> list[str] | None:
        if order is not None:
            unknown = [p for p in order if p not in PROVIDERS]
            if unknown:
                raise ValueError(f"unknown provider(s) {unknown}; known: {', '.join(PROVIDERS)}")
        return order

    def timeouts(self) -> Timeouts:
        return Timeouts(connect_s=self.connect_timeout_s, read_idle_s=self.read_idle_timeout_s)

    def breaker(self) -> BreakerConfig:
        return BreakerConfig(failure_threshold=self.breaker_failure_threshold,
                             cooldown_s=self.breaker_cooldown_s, max_cooldown_s=self.breaker_max_cooldown_s)
