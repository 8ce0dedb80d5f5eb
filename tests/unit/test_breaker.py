"""The circuit breaker's state machine, driven by an injected clock (no sleeps), and the table that keys
breakers by upstream identity."""

from __future__ import annotations

import hashlib
import re

from server.providers.breaker import BreakerConfig, CircuitBreaker
from server.providers.breaker_table import BreakerTable
from server.providers.credentials import ProviderCredential


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, threshold: int = 3) -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(failure_threshold=threshold, cooldown_s=10, max_cooldown_s=25), clock)


def test_opens_after_k_consecutive_failures() -> None:
    """K failures in a row open the breaker; fewer, or failures broken by a success, do not."""
    b = breaker(Clock())
    b.record_failure()
    b.record_failure()
    b.record_success()
    b.record_failure()
    b.record_failure()
    assert b.state == "closed" and b.allow("k")
    b.record_failure()
    assert b.state == "open" and not b.allow("k") and b.consecutive_failures == 3


def test_half_open_probe_after_cooldown_then_closes_on_success() -> None:
    """After the cooldown exactly one probe is let through; its success closes the breaker."""
    clock = Clock()
    b = breaker(clock, threshold=1)
    b.record_failure()
    clock.now += 9.9
    assert not b.allow("k")
    clock.now += 0.1
    assert b.state == "half_open"
    assert b.allow("k")
    assert not b.allow("k")  # the probe is in flight: everyone else waits
    b.record_success()
    assert b.state == "closed" and b.allow("k") and b.consecutive_failures == 0


def test_failed_probe_doubles_cooldown_up_to_max() -> None:
    """A failed probe reopens the breaker with a doubled cooldown, never beyond the maximum."""
    clock = Clock()
    b = breaker(clock, threshold=1)
    b.record_failure()
    for expected in (20, 25, 25):
        clock.now += b.cooldown_s
        assert b.allow("k")
        b.record_failure()
        assert b.state == "open" and b.cooldown_s == expected
    clock.now += 25
    assert b.allow("k")
    b.record_success()
    assert b.cooldown_s == 10


def test_released_probe_lets_the_next_request_probe() -> None:
    """A probe that ends without a verdict (consumer gone) frees the slot instead of wedging half-open."""
    clock = Clock()
    b = breaker(clock, threshold=1)
    b.record_failure()
    clock.now += 10
    assert b.allow("k")
    b.release()
    assert b.allow("k")


def test_rejected_key_stays_blocked_until_the_key_changes() -> None:
    """A credential rejected for auth is refused forever, whatever the time; a new key goes through."""
    clock = Clock()
    b = breaker(clock)
    b.record_rejected_key("fp-old", "auth 401")
    clock.now += 1e6
    assert not b.allow("fp-old") and b.rejected_key("fp-old") == "auth 401"
    assert b.allow("fp-new") and b.rejected_key("fp-new") is None


def cred(key: str = "sk-tenant-a-000111", url: str = "https://gw-a.example/v1", **extra: str) -> ProviderCredential:
    return ProviderCredential("openai", key, url, "api", dict(extra))


def test_breaker_key_is_per_provider_url_and_credential() -> None:
    """The same (provider, base URL, credential) gives the same key; a different key, URL, provider or region
    a different one; the key is a salted hash that never contains the secret or its plain sha256."""
    table = BreakerTable(BreakerConfig(), Clock())
    a = table.key("openai", "https://gw-a.example/v1", cred())
    assert re.fullmatch(r"openai:[0-9a-f]{16}", a)
    assert table.key("openai", "https://gw-a.example/v1/", cred()) == a
    others = {
        table.key("openai", "https://gw-a.example/v1", cred(key="sk-tenant-b-000222")),
        table.key("openai", "https://gw-b.example/v1", cred()),
        table.key("xai", "https://gw-a.example/v1", cred()),
        table.key("openai", "https://gw-a.example/v1", cred(region="eu-west-1")),
    }
    assert a not in others and len(others) == 4
    plain = hashlib.sha256(b"sk-tenant-a-000111").hexdigest()[:16]
    assert "sk-tenant" not in a and plain not in a
    assert BreakerTable(BreakerConfig(), Clock()).key("openai", "https://gw-a.example/v1", cred()) != a


def test_breaker_table_is_bounded_and_keeps_what_matters() -> None:
    """Past its size the table forgets quiet breakers first, so inventing keys cannot reset an open one;
    the least recently used goes when all are busy; idle entries expire."""
    clock = Clock()
    table = BreakerTable(BreakerConfig(failure_threshold=1, cooldown_s=600, max_cooldown_s=600), clock,
                         max_entries=3, idle_ttl_s=100)
    table.get("openai:open").breaker.record_failure()
    for n in range(10):
        table.get(f"openai:junk{n}")
    assert len(table) == 3
    opened = table.peek("openai:open")
    assert opened is not None and opened.breaker.state == "open"
    for n in range(3):
        table.get(f"openai:busy{n}").breaker.record_failure()
    assert table.peek("openai:open") is None and len(table) == 3  # all busy: the least recently used went
    clock.now += 101
    table.get("openai:fresh")
    assert len(table) == 1 and table.peek("openai:busy2") is None
