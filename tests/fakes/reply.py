"""Scripted replies for the fake provider servers, independent of wire format.

A ``Reply`` says what the model "does" (text, tool calls, usage, stop reason) and what goes wrong (an HTTP
error with Retry-After, an error inside a 200 stream, a cut connection, a slow first byte). Each fake renders
it in its own documented wire shape.

    fake.script([Reply.tool_call("bash", {"command": "ls"}), Reply.text("done")])
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

ErrorKind = Literal["overloaded", "rate_limit", "auth", "permission", "credit", "bad_request", "server"]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ToolPart:
    name: str
    arguments: dict[str, Any]
    id: str
    fragments: int = 3

    def argument_fragments(self) -> list[str]:
        """The JSON arguments cut into ``fragments`` pieces (mid-token, as providers do)."""
        raw = json.dumps(self.arguments)
        n = max(1, min(self.fragments, len(raw)))
        size = -(-len(raw) // n)
        return [raw[i : i + size] for i in range(0, len(raw), size)]


@dataclass(frozen=True)
class Reply:
    parts: tuple[TextPart | ToolPart, ...] = ()
    usage: tuple[int, int] = (12, 7)
    stop: str | None = None  # None: tool_use if a tool part is present, else end_turn
    chunk: int = 4  # characters per text delta
    status: int = 200
    error_kind: ErrorKind | None = None  # HTTP error kind (status != 200) or in-stream error kind
    error_message: str = "scripted failure"
    headers: dict[str, str] = field(default_factory=dict)
    error_after: int | None = None  # in-stream error after this many content events
    disconnect_after: int | None = None  # cut the connection after this many content events
    first_byte_delay: float = 0.0
    event_delay: float = 0.0
    split_bytes: int | None = None  # write the body in pieces of this many bytes
    fast_deltas: int | None = None  # benchmark: this many one-piece deltas of ``parts[0]`` text
    raw_body: bytes | None = None  # send exactly these bytes as the 200 body

    # -- constructors ---------------------------------------------------------------------------------

    @staticmethod
    def text(text: str, *, chunk: int = 4, usage: tuple[int, int] = (12, 7)) -> Reply:
        return Reply(parts=(TextPart(text),), chunk=chunk, usage=usage)

    @staticmethod
    def tool_call(
        name: str,
        arguments: dict[str, Any],
        *,
        id: str | None = None,
        text: str | None = None,
        fragments: int = 3,
    ) -> Reply:
        tool = ToolPart(
            name, arguments, id or f"toolu_{name}_{zlib.crc32(json.dumps(arguments).encode()):08x}", fragments
        )
        return Reply(parts=((TextPart(text),) if text else ()) + (tool,))

    @staticmethod
    def tool_calls(*calls: tuple[str, dict[str, Any]], text: str | None = None) -> Reply:
        tools = tuple(ToolPart(n, a, f"toolu_{i}_{n}") for i, (n, a) in enumerate(calls))
        return Reply(parts=((TextPart(text),) if text else ()) + tools)

    @staticmethod
    def http_error(
        status: int,
        kind: ErrorKind | None = None,
        *,
        retry_after: str | float | None = None,
        message: str = "scripted failure",
    ) -> Reply:
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        return Reply(status=status, error_kind=kind or _kind_for(status), error_message=message, headers=headers)

    @staticmethod
    def stream_error(
        kind: ErrorKind,
        *,
        after_text: str | None = None,
        message: str = "scripted failure",
    ) -> Reply:
        parts = (TextPart(after_text),) if after_text else ()
        return Reply(parts=parts, error_kind=kind, error_message=message, error_after=_count(after_text or "", 4))

    @staticmethod
    def disconnect(after_text: str) -> Reply:
        return Reply(parts=(TextPart(after_text),), disconnect_after=_count(after_text, 4))

    @staticmethod
    def many_deltas(n: int, piece: str = "tok ") -> Reply:
        return Reply(parts=(TextPart(piece),), fast_deltas=n, usage=(10, n))

    def with_(self, **changes: Any) -> Reply:
        return dataclasses.replace(self, **changes)

    @property
    def stop_reason(self) -> str:
        if self.stop:
            return self.stop
        return "tool_use" if any(isinstance(p, ToolPart) for p in self.parts) else "end_turn"

    def text_pieces(self, text: str) -> list[str]:
        return [text[i : i + self.chunk] for i in range(0, len(text), self.chunk)] or [""]


def _count(text: str, chunk: int) -> int:
    return -(-len(text) // chunk)


def _kind_for(status: int) -> ErrorKind:
    return {
        401: "auth",
        403: "permission",
        402: "credit",
        400: "bad_request",
        429: "rate_limit",
        529: "overloaded",
    }.get(status, "server")  # type: ignore[return-value]
