"""Prometheus metrics of one server process, in a registry of its own (no module globals: every app, and so
every test, has its own).

Labels are bounded on purpose: routes by their template (``/sessions/{session_id}``), tools by registered
name (anything else is ``unknown``), providers by their eight names, states and outcomes from fixed sets —
and never a tenant id, since whoever reads ``/metrics`` must not learn which tenants exist or what they do.
Gauges that describe other components (containers, breakers, subscribers, the image) are read when
``/metrics`` is scraped (``refresh``); counters and histograms are moved where things happen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from server.services import Services

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CONTAINER_STATES = ("created", "running", "paused", "restarting", "exited", "dead", "removing")
BREAKER_STATES = ("closed", "open", "half_open")
IMAGE_STATES = ("pending", "checking", "building", "ready", "failed", "missing")
CONTAINERS_CACHE_S = 5.0  # one engine list call per this long, however often /metrics is scraped
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_TOOL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
_AUDIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class Metrics:
    """Every metric the server exports; ``render()`` is the exposition text."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.http_requests = Counter("openanalyst_http_requests", "HTTP requests answered",
                                     ["method", "route", "status"], registry=r)
        self.http_duration = Histogram("openanalyst_http_request_duration_seconds",
                                       "Time to answer an HTTP request (a stream: until it ends)",
                                       ["method", "route"], buckets=_HTTP_BUCKETS, registry=r)
        self.http_in_progress = Gauge("openanalyst_http_requests_in_progress", "HTTP requests being answered",
                                      registry=r)
        self.sse_streams = Gauge("openanalyst_sse_streams_open", "Server-sent event responses being streamed",
                                 ["route"], registry=r)
        self.sse_subscribers = Gauge("openanalyst_session_event_subscribers",
                                     "Live subscribers of session event streams", registry=r)
        self.tool_calls = Counter("openanalyst_tool_calls", "Tool calls finished, by tool and outcome "
                                  "(ok, error: the call ran and failed, denied: refused before running)",
                                  ["tool", "outcome"], registry=r)
        self.tool_duration = Histogram("openanalyst_tool_call_duration_seconds",
                                       "Tool call time from its started record to its finished record",
                                       ["tool", "outcome"], buckets=_TOOL_BUCKETS, registry=r)
        self.containers = Gauge("openanalyst_sandbox_containers",
                                "This server's sandbox containers by the engine's state", ["state"], registry=r)
        self.provider_attempts = Counter("openanalyst_provider_attempts",
                                         "Provider attempts by outcome (ok, retryable, auth, credit, "
                                         "bad_request, forbidden, skipped: breaker open or key rejected)",
                                         ["provider", "outcome"], registry=r)
        self.breakers = Gauge("openanalyst_provider_breakers",
                              "Circuit breakers (one per upstream identity) by provider and state",
                              ["provider", "state"], registry=r)
        self.audit_write = Histogram("openanalyst_audit_write_seconds",
                                     "From submitting an audit record to its commit by the writer thread",
                                     buckets=_AUDIT_BUCKETS, registry=r)
        self.audit_pending = Gauge("openanalyst_audit_writes_pending",
                                   "Audit records submitted and not yet committed", registry=r)
        self.image_builds = Counter("openanalyst_sandbox_image_builds",
                                    "Sandbox image builds the server ran, by outcome", ["outcome"], registry=r)
        self.image_build_duration = Histogram("openanalyst_sandbox_image_build_duration_seconds",
                                              "How long the server's image builds took",
                                              buckets=(10, 30, 60, 120, 300, 600, 1200, 1800), registry=r)
        self.image_state = Gauge("openanalyst_sandbox_image_state",
                                 "1 for the sandbox image's current state, 0 for the others", ["state"],
                                 registry=r)
        self._containers_at = -CONTAINERS_CACHE_S

    # -- moved where things happen --------------------------------------------------------------------

    def provider_attempt(self, provider: str, outcome: str) -> None:
        self.provider_attempts.labels(provider, outcome).inc()

    def image_build(self, outcome: str, seconds: float) -> None:
        self.image_builds.labels(outcome).inc()
        self.image_build_duration.observe(seconds)

    # -- read at scrape time --------------------------------------------------------------------------

    async def refresh(self, services: Services) -> None:
        """Gauges from the components' own state; the engine is asked at most every CONTAINERS_CACHE_S."""
        if services.events is not None:
            self.sse_subscribers.set(services.events.subscriber_count())
        router = services.router
        if router is not None and hasattr(router, "breaker_states"):
            self.breakers.clear()
            for (provider, state), count in router.breaker_states().items():
                self.breakers.labels(provider, state).set(count)
        backend = services.sandbox_backend
        status = getattr(backend, "image_status", None)
        if status is not None:
            for state in IMAGE_STATES:
                self.image_state.labels(state).set(1 if status.state == state else 0)
        if backend is not None and time.monotonic() - self._containers_at >= CONTAINERS_CACHE_S:
            self._containers_at = time.monotonic()
            await self._count_containers(backend)

    async def _count_containers(self, backend: Any) -> None:
        manager = getattr(backend, "ready_manager", lambda: None)()
        if manager is None:
            return
        try:
            rows = await asyncio.wait_for(manager.backend.list_managed(manager.config.instance_id), 5.0)
        except Exception as exc:  # the engine is down or slow: keep the last counts, say so once per scrape
            log.warning("metrics: could not list the sandbox containers: %s", exc)
            return
        counts = dict.fromkeys(CONTAINER_STATES, 0)
        for row in rows:
            state = str(row.get("State") or "unknown")
            counts[state if state in counts else "dead"] += 1
        for state, count in counts.items():
            self.containers.labels(state).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
