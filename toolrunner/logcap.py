"""Log lines built from sandbox-controlled data: capped in length and rate-limited per source.

A runner (or whatever took its place inside the container) chooses what it sends, so a line that quotes it
is an amplifier: frames with a 1 MB unknown ``type`` grew the server log by 20 MB in 0.3 s. Each quoted value
is cut to ``max_chars`` (its repr, with how much was left out), and each source (one channel, one kind of
line) may write ``burst`` lines at once and then ``per_s`` lines a second; what is dropped is counted and the
count is written with the next line that passes, or by ``flush`` when the source closes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_CHARS = 200
BURST = 5
PER_S = 0.2  # one line every 5 s per source once the burst is spent


def shown(value: object, max_chars: int = MAX_CHARS) -> str:
    """``repr(value)`` cut to ``max_chars``, never building the repr of a huge string or bytes first."""
    if isinstance(value, str | bytes) and len(value) > max_chars:
        return f"{value[:max_chars]!r}…[{len(value) - max_chars} more]"
    try:
        text = repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deep to show>"
    return text if len(text) <= max_chars else f"{text[:max_chars]}…[{len(text) - max_chars} more chars]"


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0


class CappedLog:
    """Rate-limited, length-capped warnings about one untrusted source (for example one runner channel)."""

    def __init__(self, logger: logging.Logger, *, burst: int = BURST, per_s: float = PER_S,
                 max_chars: int = MAX_CHARS, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._burst = burst
        self._per_s = per_s
        self.max_chars = max_chars
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def warning(self, kind: str, message: str, *values: object) -> bool:
        """Log ``message % (shown(v) for v in values)`` unless ``kind`` is over its rate; True if written."""
        now = self._clock()
        bucket = self._buckets.setdefault(kind, _Bucket(float(self._burst), now))
        bucket.tokens = min(float(self._burst), bucket.tokens + (now - bucket.stamp) * self._per_s)
        bucket.stamp = now
        if bucket.tokens < 1:
            bucket.suppressed += 1
            return False
        bucket.tokens -= 1
        text = message % tuple(shown(v, self.max_chars) for v in values)
        if bucket.suppressed:
            text += f" ({bucket.suppressed} similar lines suppressed)"
            bucket.suppressed = 0
        self._logger.warning("%s", text)
        return True

    def flush(self) -> None:
        """Say how many lines were dropped since the last one written, for every kind (at close)."""
        for kind, bucket in self._buckets.items():
            if bucket.suppressed:
                self._logger.warning("%s: %d similar lines suppressed", kind, bucket.suppressed)
                bucket.suppressed = 0
