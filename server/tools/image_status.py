"""What the server knows of the sandbox image while it waits for it, for ``GET /v1/sandbox`` and metrics.

The image is checked (and built when missing) in a worker thread at start; ``progress`` receives the build's
output lines from that thread. The status keeps the last lines, the state and the times, so a client asking
while the build runs sees how far it got instead of waiting for it.

    pending ─► checking ─► ready
                  │  └──► building ─► ready | failed
                  └──► failed
    ready ─► missing (the engine lost the image) ─► checking ─► …
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

log = logging.getLogger(__name__)

ImageState = Literal["pending", "checking", "building", "ready", "failed", "missing"]
KEEP_LINES = 20


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ImageStatus:
    def __init__(self, on_build: Callable[[str, float], None] | None = None) -> None:
        self.state: ImageState = "pending"
        self.tag: str | None = None
        self.error: str | None = None
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self._lines: deque[str] = deque(maxlen=KEEP_LINES)
        self._lock = threading.Lock()
        self._began = 0.0
        self._build_began: float | None = None
        self._on_build = on_build or (lambda outcome, seconds: None)

    def checking(self) -> None:
        with self._lock:
            self.state, self.error, self.finished_at = "checking", None, None
            self.started_at, self._began = _now(), time.monotonic()
            self._lines.clear()

    def progress(self, line: str) -> None:
        """A build output line (from the worker thread): the image is being built."""
        log.info("sandbox image: %s", line)
        with self._lock:
            if self.state != "building":
                self.state, self._build_began = "building", time.monotonic()
            self._lines.append(line[:500])

    def ready(self, tag: str) -> None:
        self._finish("ready", None, "ok")
        self.tag = tag

    def failed(self, message: str) -> None:
        self._finish("failed", message, "failed")

    def missing(self, message: str) -> None:
        with self._lock:
            self.state, self.error = "missing", message

    def _finish(self, state: ImageState, error: str | None, outcome: str) -> None:
        with self._lock:
            built = self._build_began
            self.state, self.error, self.finished_at, self._build_began = state, error, _now(), None
        if built is not None:
            self._on_build(outcome, time.monotonic() - built)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            waiting = self.state in ("checking", "building")
            return {"state": self.state, "tag": self.tag, "error": self.error, "started_at": self.started_at,
                    "finished_at": self.finished_at,
                    "elapsed_s": round(time.monotonic() - self._began, 1) if waiting else None,
                    "progress": list(self._lines)}
