"""The runner wire protocol (docs/design.md §1), shared by the host and the in-container runner.

Standard library only: this file is copied into the sandbox image. A frame is a 4-byte big-endian length
followed by that many bytes of UTF-8 JSON holding one object. Nothing here names a class the other side
could be made to import: errors cross the boundary as codes from the fixed set ``ERROR_CODES``.
"""

from __future__ import annotations

import json
import struct
from typing import IO, Any

PROTOCOL_VERSION = 1
MAX_FRAME = 8 * 1024 * 1024
# Output is JSON-escaped inside a frame (a control byte becomes six), so the cap on output stays well below.
MAX_OUTPUT_CAP = 1024 * 1024
DEFAULT_OUTPUT_CAP = 64 * 1024
MAX_TIMEOUT_S = 24 * 3600.0
# ``{"type":"reset","id":N,"wait_s":S}`` cancels every call in flight and is answered, once they have ended
# or S seconds have passed, by ``{"type":"reset","id":N,"cancelled":C,"left":L,"max_id":M}``; a host that
# re-attaches after a crash sends it first and numbers its own frames from M + 1.
MAX_RESET_WAIT_S = 60.0
HEADER = struct.Struct(">I")

ERROR_CODES = frozenset(
    {
        "INVALID_INPUT",
        "TOOL_NOT_FOUND",
        "TOOL_UNAVAILABLE",
        "PATH_OUTSIDE_WORKSPACE",
        "FILE_NOT_FOUND",
        "IS_A_DIRECTORY",
        "BINARY_FILE",
        "FILE_TOO_LARGE",
        "NO_MATCH",
        "MULTIPLE_MATCHES",
        "TIMEOUT",
        "CANCELLED",
        "PROCESS_NOT_FOUND",
        "RESOURCE_LIMIT",
        "INTERNAL",
        "PROTOCOL_ERROR",
    }
)
LIMITS = frozenset({"timeout", "memory", "pids", "output", "disk"})
RESULT_FIELDS = (
    "tool_name",
    "output",
    "exit_code",
    "duration_ms",
    "truncated",
    "timed_out",
    "limit",
    "error",
)


class FrameError(Exception):
    """The byte stream cannot be trusted any more (oversized length, bad JSON, truncated frame)."""


def encode(obj: dict[str, Any]) -> bytes:
    """One frame; raises FrameError if it would exceed MAX_FRAME (callers cut output before sending)."""
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds MAX_FRAME ({MAX_FRAME})")
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """The body length announced by a 4-byte header; oversized means the channel is corrupt."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise FrameError(f"frame of {length} bytes exceeds MAX_FRAME ({MAX_FRAME})")
    return int(length)


def decode(body: bytes) -> dict[str, Any]:
    """Parse one frame body into a JSON object, or raise FrameError saying why not."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FrameError(f"frame is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FrameError(f"frame is a JSON {type(obj).__name__}, not an object")
    return obj


def read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    """Blocking read of one frame from a binary stream; None at a clean end of stream."""
    header = _read_exact(stream, HEADER.size)
    if header is None:
        return None
    body = _read_exact(stream, frame_length(header))
    if body is None:
        raise FrameError("stream ended inside a frame")
    return decode(body)


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        part = stream.read(n - len(buf))
        if not part:
            if buf:
                raise FrameError("stream ended inside a frame")
            return None
        buf += part
    return bytes(buf)


def cut(data: bytes, cap: int) -> tuple[str, bool]:
    """Keep the head of `data` within `cap` bytes and say how much was dropped; returns (text, truncated)."""
    if len(data) <= cap:
        return data.decode("utf-8", "replace"), False
    head = data[:cap].decode("utf-8", "ignore")
    return f"{head}\n[output truncated: {len(data) - cap} more bytes dropped]", True


def cut_text(text: str, cap: int) -> tuple[str, bool]:
    """`cut` for text already decoded (the host re-cuts what the runner sent)."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= cap:
        return text, False
    return cut(raw, cap)


def make_result(
    tool_name: str,
    output: str = "",
    *,
    exit_code: int | None = None,
    duration_ms: float = 0.0,
    truncated: bool = False,
    timed_out: bool = False,
    limit: str | None = None,
    error: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A ToolResult as a plain dict, the shape both sides agree on."""
    return {
        "tool_name": tool_name,
        "output": output,
        "exit_code": exit_code,
        "duration_ms": round(duration_ms, 3),
        "truncated": truncated,
        "timed_out": timed_out,
        "limit": limit,
        "error": None if error is None else {"code": error[0], "message": error[1]},
    }
