"""What one tool call carries through the runner: its limits, its cancel switch, its output buffer.

Tools raise ``ToolFailure(code, message)`` for a clean error result; everything else they report through
``Output`` (bounded, optionally streamed) and the fields set on the ``Call``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toolrunner.protocol import cut, make_result

Emit = Callable[[dict[str, Any]], None]


class ToolFailure(Exception):
    """A call that ends with an error code from protocol.ERROR_CODES."""

    def __init__(self, code: str, message: str, *, output: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.output = output


class Output:
    """Collects a call's output in arrival order, keeping the head within the cap, streaming if asked."""

    def __init__(self, cap: int, call_id: int, emit: Emit | None) -> None:
        self.cap = cap
        self.buf = bytearray()
        self.dropped = 0
        self._streamed = 0
        self._call_id = call_id
        self._emit = emit
        self._lock = threading.Lock()

    def add(self, data: bytes, stream: str = "stdout") -> None:
        if not data:
            return
        with self._lock:
            room = self.cap - len(self.buf)
            keep = data[:room] if room > 0 else b""
            self.buf += keep
            self.dropped += len(data) - len(keep)
            if self._emit is not None and keep and self._streamed < self.cap:
                self._streamed += len(keep)
                self._emit(
                    {
                        "type": "chunk",
                        "id": self._call_id,
                        "stream": stream,
                        "data": keep.decode("utf-8", "replace"),
                    }
                )

    def text(self) -> tuple[str, bool]:
        with self._lock:
            data, dropped = bytes(self.buf), self.dropped
        if dropped:
            return f"{data.decode('utf-8', 'ignore')}\n[output truncated: {dropped} more bytes dropped]", True
        return cut(data, self.cap)

    def full(self) -> bool:
        with self._lock:
            return len(self.buf) >= self.cap

    def tail_text(self, n: int = 4096) -> str:
        """The last bytes kept, for spotting limit messages such as ENOSPC."""
        with self._lock:
            return bytes(self.buf[-n:]).decode("utf-8", "replace")


@dataclass
class Call:
    """One call in flight. `cancel()` may come from the reader thread at any time."""

    id: int
    session: str
    tool: str
    input: dict[str, Any]
    timeout_s: float
    output: Output
    call_id: str | None = None  # the host's id of the call (its audit records'), named by its proxy credential
    started: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)
    reported: threading.Event = field(default_factory=threading.Event)  # its result has been sent
    exit_code: int | None = None
    timed_out: bool = False
    truncated: bool = False
    limit: str | None = None
    failure: tuple[str, str] | None = None  # a limit that stopped the call without a ToolFailure
    note: str = ""
    _on_cancel: list[Callable[[], None]] = field(default_factory=list)
    _deferred: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def deadline(self) -> float:
        return self.started + self.timeout_s

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def on_cancel(self, fn: Callable[[], None]) -> None:
        """Run `fn` when the host cancels (at once if it already has)."""
        with self._lock:
            self._on_cancel.append(fn)
            now = self.cancelled.is_set()
        if now:
            fn()

    def defer(self, fn: Callable[[], None]) -> None:
        """Run `fn` once the result is sent (work the caller need not wait for)."""
        self._deferred.append(fn)

    def run_deferred(self) -> None:
        fns, self._deferred = self._deferred, []
        for fn in fns:
            fn()

    def cancel(self) -> None:
        with self._lock:
            if self.cancelled.is_set():
                return
            self.cancelled.set()
            fns = list(self._on_cancel)
        for fn in fns:
            with contextlib.suppress(OSError):
                fn()

    def result(self, error: tuple[str, str] | None = None, extra_output: str = "") -> dict[str, Any]:
        text, truncated = self.output.text()
        truncated = truncated or self.truncated
        if extra_output:
            text = f"{text}{extra_output}" if text else extra_output
        if self.note:
            text = f"{text}\n{self.note}" if text else self.note
        limit = self.limit
        if truncated and limit is None:
            limit = "output"
        if self.cancelled.is_set() and error is None:
            error = ("CANCELLED", "the host cancelled the call")
        elif self.timed_out and error is None:
            error = ("TIMEOUT", f"stopped after the {self.timeout_s:g} s timeout")
        elif error is None:
            error = self.failure
        return make_result(
            self.tool,
            text,
            exit_code=self.exit_code,
            duration_ms=(time.perf_counter() - self.started) * 1000,
            truncated=truncated,
            timed_out=self.timed_out,
            limit=limit,
            error=error,
        )


def require_str(inp: dict[str, Any], name: str, *, optional: bool = False, allow_empty: bool = True) -> Any:
    """The string field `name` of a tool input, or INVALID_INPUT naming the field."""
    value = inp.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ToolFailure("INVALID_INPUT", f"field {name!r} must be a string")
    if not allow_empty and not value:
        raise ToolFailure("INVALID_INPUT", f"field {name!r} must not be empty")
    return value


def opt_bool(inp: dict[str, Any], name: str) -> bool:
    value = inp.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ToolFailure("INVALID_INPUT", f"field {name!r} must be a boolean")
    return value


def opt_int(inp: dict[str, Any], name: str, *, minimum: int = 0) -> int | None:
    value = inp.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ToolFailure("INVALID_INPUT", f"field {name!r} must be an integer >= {minimum}")
    return value


def check_fields(inp: dict[str, Any], allowed: set[str]) -> None:
    """Unknown input fields are refused, so a typo never silently changes behaviour."""
    extra = sorted(set(inp) - allowed)
    if extra:
        raise ToolFailure("INVALID_INPUT", f"unknown field {extra[0]!r}; allowed: {', '.join(sorted(allowed))}")
