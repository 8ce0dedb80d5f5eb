"""``ProviderRouter``: one model turn, tried on the tenant's configured providers in order until one answers.

Per provider: retryable failures (connection, timeouts, 408/409/429/5xx/529, in-stream overload) are retried
with exponential backoff, honouring Retry-After up to a cap (a longer wait moves on at once); auth, credit and
quota failures move on at once and mark the credential rejected until it changes; a 400 is raised (the
request is bad everywhere). Nothing reaches the caller before the first content event, so a failure before
it is invisible except for an ``Attempt``; a failure after it yields ``Discarded`` and the next provider
starts from scratch.

Health is tracked per upstream identity (provider, base URL, credential: ``breaker_table``), never per
provider name, so one tenant's failing gateway cannot open another tenant's circuit. A tenant URL refused at
connection (``forbidden``) moves on at once and is not ill health: no request was sent. Likewise an
unexpected error raised before the adapter sent anything (a request too deep to encode, a bug translating it)
was caused by this request, not by the upstream: it is raised at once as a ``bad_request``, never retried and
never counted on the breaker, which tenants on the server's credential share.

What a breaker's status shows is per tenant: the last error text and time to first token are kept per
(breaker, tenant) in a small bounded map, so tenants sharing the server's credential share the breaker's state
but never see each other's error messages (which quote their prompts) or latencies.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection
from contextlib import aclosing
from typing import Literal

import httpx
from pydantic import BaseModel

from server.errors import ApiError
from server.providers.breaker import CircuitBreaker, State
from server.providers.breaker_table import BreakerEntry, BreakerTable
from server.providers.config import RouterConfig
from server.providers.credentials import CredentialLookup, ProviderCredential
from server.providers.registry import PROVIDERS, can_serve, make_adapter, translate_model
from server.providers.registry import base_url as upstream_url
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


class ModelNotServed(ApiError):
    """A named model that no configured provider serves: refused rather than answered by another vendor's
    model, unless ``allow_model_substitution`` is on."""

    status = 400

    def __init__(self, model: str, configured: list[str]) -> None:
        super().__init__("MODEL_NOT_AVAILABLE",
                         f"no configured provider serves model {model[:100]!r} (configured: {', '.join(configured)});"
                         " add a provider that serves it (PUT /me/providers/{name}), ask for a model one of them"
                         " serves, or set OPENANALYST_ALLOW_MODEL_SUBSTITUTION=true to let another model answer")


class AllProvidersFailed(ApiError):
    status = 502

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        detail = "; ".join(f"{p}: {m}" for p, m in errors)
        super().__init__("ALL_PROVIDERS_FAILED", f"every configured provider failed ({detail})")


class ProviderStatus(BaseModel):
    """One provider as the calling tenant reaches it: the breaker of its own credential (``breaker_key`` is
    a keyed hash, never the key; tenants sharing the server's credential share it)."""

    provider: str
    configured: bool
    breaker_key: str | None
    state: State
    consecutive_failures: int
    credential_rejected: bool
    last_error: str | None
    last_latency_ms: float | None


class _Turn:
    """What one turn has learnt so far: each provider's failure, and whether one answered."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.answered = False


class ProviderRouter:
    """Tries a turn on the tenant's providers. Credentials a tenant set over the API (``source="api"``) go
    through ``tenant_client`` (the guarded client of ``server.providers.guarded_http``) unless the tenant is
    in ``trusted_tenants`` (the owner); the server's own credentials use ``http_client``."""

    def __init__(self, config: RouterConfig, http_client: httpx.AsyncClient,
                 credential_lookup: CredentialLookup, *, tenant_client: httpx.AsyncClient | None = None,
                 trusted_tenants: Collection[str] = (), clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.config = config
        self._client = http_client
        self._tenant_client = tenant_client
        self._trusted = frozenset(trusted_tenants)
        self._lookup = credential_lookup
        self._clock = clock
        self._sleep = sleep
        self._timeouts = config.timeouts()
        self._breakers = BreakerTable(config.breaker(), clock, max_entries=config.breaker_max_entries,
                                      idle_ttl_s=config.breaker_idle_ttl_s)
        self.observe: Callable[[str, str], None] = lambda provider, outcome: None  # per attempt, for metrics

    def breaker_states(self) -> Counter[tuple[str, str]]:
        """How many breakers are in each state, by provider (for metrics: no keys, no tenants)."""
        return Counter((key.split(":", 1)[0], entry.breaker.state) for key, entry in self._breakers.items())

    async def credentials(self, tenant_id: str) -> dict[str, ProviderCredential]:
        """The tenant's providers as turns see them (the OpenAnalyst sign-in included), for listings."""
        return {k: v for k, v in (await self._lookup.credentials(tenant_id)).items() if k in PROVIDERS}

    def breaker_key(self, provider: str, cred: ProviderCredential) -> str:
        return self._breakers.key(provider, upstream_url(provider, cred), cred)

    def _client_for(self, tenant_id: str, cred: ProviderCredential) -> httpx.AsyncClient:
        if self._tenant_client is not None and cred.source == "api" and tenant_id not in self._trusted:
            return self._tenant_client
        return self._client

    def plan(self, model: str, creds: dict[str, ProviderCredential]) -> list[tuple[str, str]]:
        """(provider, model as that provider spells it), in the order they will be tried: only providers that
        serve ``model`` unless substitution is allowed (then the others follow, with their default models)."""
        order = self.config.provider_order or list(PROVIDERS)
        configured = [p for p in order if p in creds]

        def default(p: str) -> str:
            return str(creds[p].extra.get("model") or self.config.default_models.get(p)
                       or PROVIDERS[p].default_model)

        if not model:
            return [(p, default(p)) for p in configured]
        able = [(p, translate_model(p, model)) for p in configured if can_serve(p, model)]
        if not self.config.allow_model_substitution:
            if not able:
                raise ModelNotServed(model, configured)
            return able
        others = [(p, default(p)) for p in configured if not can_serve(p, model)]
        if self.config.provider_order:
            chosen = dict(able + others)
            return [(p, chosen[p]) for p in configured]
        return able + others

    async def stream(self, tenant_id: str, req: ChatRequest) -> AsyncGenerator[RouterEvent, None]:
        creds = {k: v for k, v in (await self._lookup.credentials(tenant_id)).items() if k in PROVIDERS}
        if not creds:
            raise NoProviderConfigured()
        turn = _Turn()
        for provider, model in self.plan(req.model, creds):
            async with aclosing(self._provider(tenant_id, provider, model, creds[provider], req, turn)) as events:
                async for event in events:
                    yield event
            if turn.answered:
                return
        raise AllProvidersFailed(turn.errors)

    async def _provider(self, tenant_id: str, provider: str, model: str, cred: ProviderCredential,
                        req: ChatRequest, turn: _Turn) -> AsyncGenerator[RouterEvent, None]:
        """Tries one provider (with retries), noting its failure or success in ``turn``."""
        key = self.breaker_key(provider, cred)
        entry = self._breakers.get(key)
        breaker = entry.breaker
        health = entry.view(tenant_id)
        fingerprint = cred.fingerprint
        if not breaker.allow(fingerprint):
            self.observe(provider, "skipped")
            rejected = breaker.rejected_key(fingerprint)
            turn.errors.append((provider, f"skipped: credential rejected earlier ({rejected})" if rejected
                           else f"skipped: circuit {breaker.state}"))
            return
        adapter = make_adapter(provider, self._client_for(tenant_id, cred), cred, self._timeouts)
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
                sent_before = adapter.requests_sent
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
                    err = exc if isinstance(exc, ProviderError) else self._unexpected(
                        provider, exc, sent=adapter.requests_sent > sent_before)
                    self.observe(provider, err.kind)
                    health.last_error = str(err)
                    action = self._after_failure(err, key, breaker, fingerprint, attempt, committed)
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
                self.observe(provider, "ok")
                health.last_error = None
                verdict = True
                turn.answered = True
                return
        finally:
            if not verdict:
                breaker.release()

    def _after_failure(self, err: ProviderError, key: str, breaker: CircuitBreaker, fingerprint: str,
                       attempt: int, committed: bool) -> Literal["raise", "next"] | float:
        """Record the failure; then raise it (bad request), go to the next provider, or wait this long."""
        if err.kind == "bad_request":
            breaker.release()  # the provider is fine; the request is not
            return "raise"
        if err.kind == "forbidden":  # the tenant's URL reached a refused address: no request was sent
            breaker.release()
            return "next"
        if err.kind in ("auth", "credit") and not committed:
            breaker.record_rejected_key(fingerprint, f"{err.kind} {err.status or ''}".strip())
            breaker.release()
            return "next"
        if err.status != 404:  # an unknown model is not ill health
            was = breaker.state
            breaker.record_failure()
            if was != "open" and breaker.state == "open":
                log.warning("provider circuit %s opened after %d consecutive failures (cooldown %.0f s)",
                            key, breaker.consecutive_failures, breaker.cooldown_s)
        else:
            breaker.release()
        wait = None if committed else self._wait_before_retry(err, attempt)
        return "next" if wait is None or breaker.state != "closed" else wait

    @staticmethod
    def _unexpected(provider: str, exc: Exception, *, sent: bool) -> ProviderError:
        """A bug or surprise inside an adapter fails this attempt like a provider error (logged briefly: a
        RecursionError's traceback is hundreds of KB). Raised before anything was sent, the request caused
        it: a ``bad_request``, neither retried nor counted against the upstream."""
        name = type(exc).__name__
        if not sent:
            log.warning("provider %s: the request could not be prepared (%s); nothing was sent", provider, name)
            return ProviderError("bad_request", None, None,
                                 f"the request could not be prepared for {provider} ({name}); nothing was sent",
                                 provider)
        log.error("provider %s: unexpected %s in the adapter", provider, name,
                  exc_info=None if isinstance(exc, RecursionError) else exc)
        return ProviderError("retryable", None, None, f"unexpected {name} in the adapter", provider)

    def _wait_before_retry(self, err: ProviderError, attempt: int) -> float | None:
        """Seconds to wait before retrying this provider, or None to move on to the next."""
        if err.status == 404 or attempt > self.config.max_retries:
            return None
        if err.retry_after is not None:
            return err.retry_after if err.retry_after <= self.config.retry_after_cap_s else None
        delay = min(self.config.backoff_base_s * 2 ** (attempt - 1), self.config.backoff_max_s)
        return float(delay * _jitter.uniform(0.5, 1.0))

    async def status(self, tenant_id: str) -> list[ProviderStatus]:
        """Per provider, for this tenant's credential: its breaker's key and state, failures, and this tenant's
        own last (redacted) error and time to first token. Another tenant's breakers, and another tenant's
        errors and latencies on a shared breaker, are never shown."""
        creds = await self._lookup.credentials(tenant_id)
        return [self._status(tenant_id, name, creds.get(name)) for name in PROVIDERS]

    def _status(self, tenant_id: str, name: str, cred: ProviderCredential | None) -> ProviderStatus:
        key = self.breaker_key(name, cred) if cred is not None else None
        entry: BreakerEntry | None = self._breakers.peek(key) if key is not None else None
        if cred is None or entry is None:
            return ProviderStatus(provider=name, configured=cred is not None, breaker_key=key, state="closed",
                                  consecutive_failures=0, credential_rejected=False, last_error=None,
                                  last_latency_ms=None)
        rejected = entry.breaker.rejected_key(cred.fingerprint) is not None
        own = entry.peek_view(tenant_id)
        return ProviderStatus(
            provider=name, configured=True, breaker_key=key, state="open" if rejected else entry.breaker.state,
            consecutive_failures=entry.breaker.consecutive_failures, credential_rejected=rejected,
            last_error=own.last_error if own else None, last_latency_ms=own.last_latency_ms if own else None)


__all__ = ["AllProvidersFailed", "NoProviderConfigured", "ProviderRouter", "ProviderStatus", "RouterConfig"]
