"""The webhook signature a receiver checks, and the bounded back-off between delivery attempts."""

from __future__ import annotations

import hashlib
import hmac

from server.runs.webhooks import MAX_BACKOFF_S, RetryPolicy, sign


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    """``t=<ts>,v1=<hex>`` with the HMAC of ``f"{ts}.{body}"``: another body, time or secret gives another one."""
    body = b'{"type":"run.finished"}'
    header = sign("whsec_secret_0123456789", 1764670000, body)
    expected = hmac.new(b"whsec_secret_0123456789", b"1764670000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1764670000,v1={expected}"
    assert sign("whsec_secret_0123456789", 1764670001, body) != header
    assert sign("whsec_secret_0123456789", 1764670000, body + b" ") != header
    assert sign("whsec_other_0123456789x", 1764670000, body) != header


def test_back_off_doubles_and_is_capped() -> None:
    """1, 2, 4 … times the first delay after each failed attempt, never more than the cap."""
    retry = RetryPolicy(max_attempts=5, first_delay_s=0.5)
    assert [retry.delay(n) for n in range(1, 5)] == [0.5, 1.0, 2.0, 4.0]
    assert RetryPolicy(20, 10.0).delay(19) == MAX_BACKOFF_S
