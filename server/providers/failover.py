"""``ProviderRouter``: one model turn, tried on the tenant's configured providers in order until one answers.

Per provider: retryable failures (connection, timeouts, 408/409/429/5xx/529, in-stream overload) are retried
with exponential backoff, honouring Retry-After up to a cap (a longer wait moves on at once); auth, credit and
quota failures move on at once and mark the credential rejected until it changes; a 400 is raised (the
request is bad everywhere). Nothing reaches the caller before the first content event, so a failure before
it is invisible except for an ``Attempt``; a failure after it yields ``Discarded`` and the next provider
starts from scratch.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Literal

import httpx
from pydantic import BaseModel

from server.errors import ApiError
from server.providers.breaker import CircuitBreaker, State
from server.providers.config import RouterConfig
from server.providers.credentials import CredentialLookup, ProviderCredential
from server.providers.registry import PROVIDERS, can_serve, make_adapter, translate_model
from server.providers.types import (
    Attempt,
    ChatRequest,
    Discarded,
    ProviderError,
    RouterEvent,
    StreamEvent,
    TextDelta,
    ToolCall,
)

_jitter = secrets.SystemRandom()
log = logging.getLogger(__name__)


class NoProviderConfigured(ApiError):
    status = 503

    def __init__(self) -> None:
        keys = "ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY, XAI_API_KEY, OPENROUTER_API_KEY, ..."
        super().__init__("NO_PROVIDER_CONFIGURED",
                         f"no LLM provider is configured: set an API key in the server's environment "
                         f"({keys}) or add one with PUT /me/providers/{{name}} "
                         f"(one of: {', '.join(PROVIDERS)})")


class AllProvidersFailed(ApiError):
    status = 502

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        detail = "; ".join(f"{p}: {m}" for p, m in errors)
        super().__init__("ALL_PROVIDERS_FAILED", f"every configured provider failed ({detail})")


class ProviderStatus(BaseModel):
    provider: str
    configured: bool
    state: State
    consecutive_failures: int
    credential_rejected: bool
    last_error: str | None
    last_latency_ms: float | None


class _Health:
    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.last_error: str | None = None
        self.last_latency_ms: float | None = None


class _Turn:
    """What one turn has learnt so far: each provider's failure, and whether one answered."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.answered = False


class ProviderRouter:
    def __init__(self, config: RouterConfig, http_client: httpx.AsyncClient,
                 credential_lookup: CredentialLookup, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.config = config
        self._client = http_client
        self._lookup = credential_lookup
        self._clock = clock
        self._sleep = sleep
        self._timeouts = config.timeouts()
        self._health = {name: _Health(CircuitBreaker(config.breaker(), clock)) for name in PROVIDERS}
        self._seen: set[str] = set()

    def plan(self, model: str, creds: dict[str, ProviderCredential]) -> list[tuple[str, str]]:
        """(provider, model as that provider spells it), in the order they will be tried."""
        order = self.config.provider_order or list(PROVIDERS)
        configured = [p for p in order if p in creds]

        def default(p: str) -> str:
            return str(creds[p].extra.get("model") or self.config.default_models.get(p)
                       or PROVIDERS[p].default_model)

        if not model:
            return [(p, default(p)) for p in configured]
        able = [(p, translate_model(p, model)) for p in configured if can_serve(p, model)]
        others = [(p, default(p)) for p in configured if not can_serve(p, model)]
        if self.config.provider_order:
            chosen = dict(able + others)
            return [(p, chosen[p]) for p in configured]
        return able + others

    async def stream(self, tenant_id: str, req: ChatRequest) -> AsyncGenerator[RouterEvent, None]:
        creds = {k: v for k, v in (await self._lookup.credentials(tenant_id)).items() if k in PROVIDERS}
        self._seen.update(creds)
        if not creds:
            raise NoProviderConfigured()
        turn = _Turn()
        for provider, model in self.plan(req.model, creds):
            async with aclosing(self._provider(provider, model, creds[provider], req, turn)) as events:
                async for event in events:
                    yield event
            if turn.answered:
                return
        raise AllProvidersFailed(turn.errors)

    async def _provider(self, provider: str, model: str, cred: ProviderCredential, req: ChatRequest,
                        turn: _Turn) -> AsyncGenerator[RouterEvent, None]:
        """Tries one provider (with retries), noting its failure or success in ``turn``."""
        health = self._health[provider]
        breaker = health.breaker
        fingerprint = cred.fingerprint
        if not breaker.allow(fingerprint):
            rejected = breaker.rejected_key(fingerprint)
            turn.errors.append((provider, f"skipped: credential rejected earlier ({rejected})" if rejected
                           else f"skipped: circuit {breaker.state}"))
            return
        adapter = make_adapter(provider, self._client, cred, self._timeouts)
        preq = req.model_copy(update={"model": model})
        attempt = 0
        verdict = False
        try:
            while True:
                attempt += 1
                yield Attempt(provider=provider, model=model, attempt=attempt)
                committed = False
                pending: list[StreamEvent] = []
                started = self._clock()
                try:
                    async with aclosing(adapter.stream(preq)) as stream:
                        async for event in stream:
                            if committed:
                                yield event
                            elif isinstance(event, TextDelta | ToolCall):
                                committed = True
                                health.last_latency_ms = round((self._clock() - started) * 1000, 2)
                                for held in pending:
                                    yield held
                                yield event
                            else:
                                pending.append(event)
                    for held in pending:
                        yield held
                except Exception as exc:
                    err = exc if isinstance(exc, ProviderError) else self._unexpected(provider, exc)
                    health.last_error = str(err)
                    action = self._after_failure(err, breaker, fingerprint, attempt, committed)
                    verdict = True
                    if committed:
                        yield Discarded(provider=provider, reason=err.message)
                    if action == "raise":
                        raise err from None
                    if action == "next":
                        turn.errors.append((provider, f"failed mid-answer: {err}" if committed else str(err)))
                        return
                    verdict = False
                    await self._sleep(action)
                    continue
                breaker.record_success()
                health.last_error = None
                verdict = True
                turn.answered = True
                return
        finally:
            if not verdict:
                breaker.release()

    def _after_failure(self, err: ProviderError, breaker: CircuitBreaker, fingerprint: str, attempt: int,
                       committed: bool) -> Literal["raise", "next"] | float:
        """Record the failure; then raise it (bad request), go to the next provider, or wait this long."""
        if err.kind == "bad_request":
            breaker.release()  # the provider is fine; the request is not
            return "raise"
        if err.kind in ("auth", "credit") and not committed:
            breaker.record_rejected_key(fingerprint, f"{err.kind} {err.status or ''}".strip())
            breaker.release()
            return "next"
        if err.status != 404:  # an unknown model is not ill health
            breaker.record_failure()
        else:
            breaker.release()
        wait = None if committed else self._wait_before_retry(err, attempt)
        return "next" if wait is None or breaker.state != "closed" else wait

    @staticmethod
    def _unexpected(provider: str, exc: Exception) -> ProviderError:
        """A bug or surprise inside an adapter fails this attempt like a provider error, and is logged."""
        log.exception("provider %s: unexpected error in the adapter", provider)
        return ProviderError("retryable", None, None, f"unexpected {type(exc).__name__} in the adapter", provider)

    def _wait_before_retry(self, err: ProviderError, attempt: int) -> float | None:
        """Seconds to wait before retrying this provider, or None to move on to the next."""
        if err.status == 404 or attempt > self.config.max_retries:
            return None
        if err.retry_after is not None:
            return err.retry_after if err.retry_after <= self.config.retry_after_cap_s else None
        delay = min(self.config.backoff_base_s * 2 ** (attempt - 1), self.config.backoff_max_s)
        return float(delay * _jitter.uniform(0.5, 1.0))

    async def status(self, tenant_id: str | None = None) -> list[ProviderStatus]:
        """Per provider: breaker state, failures, last (redacted) error, time to first token, configured."""
        if tenant_id is not None:
            creds = await self._lookup.credentials(tenant_id)
            configured = set(creds)
            fingerprints = {k: v.fingerprint for k, v in creds.items()}
        else:
            configured, fingerprints = set(self._seen), {}
        out = []
        for name, health in self._health.items():
            fp = fingerprints.get(name)
            rejected = fp is not None and health.breaker.rejected_key(fp) is not None
            out.append(ProviderStatus(
                provider=name, configured=name in configured,
                state="open" if rejected else health.breaker.state,
                consecutive_failures=health.breaker.consecutive_failures, credential_rejected=rejected,
                last_error=health.last_error, last_latency_ms=health.last_latency_ms))
        return out


__all__ = ["AllProvidersFailed", "NoProviderConfigured", "ProviderRouter", "ProviderStatus", "RouterConfig"]
