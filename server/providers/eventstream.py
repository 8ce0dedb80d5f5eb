"""AWS event-stream framing (``application/vnd.amazon.eventstream``), used by Bedrock ConverseStream.

A message is: prelude (total length, headers length, CRC32 of those 8 bytes), headers, payload, and a CRC32
of everything before it. The decoder is incremental (bytes in, whole messages out) and checks both CRCs;
the encoder exists for the fake Bedrock server and the tests.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAX_MESSAGE = 16 * 1024 * 1024
_PRELUDE = struct.Struct(">III")
_FIXED = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}  # header value type → byte length


class EventStreamError(ValueError):
    """The byte stream is not valid event-stream framing (bad CRC, bad lengths, bad header)."""


@dataclass(frozen=True)
class EventMessage:
    headers: dict[str, str | bytes | int | bool]
    payload: bytes

    def header(self, name: str) -> str:
        value = self.headers.get(name, "")
        return value if isinstance(value, str) else str(value)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One framed message with string headers (all that Bedrock sends)."""
    raw = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + raw + payload
    return body + struct.pack(">I", zlib.crc32(body))


def _parse_headers(raw: bytes) -> dict[str, str | bytes | int | bool]:
    headers: dict[str, str | bytes | int | bool] = {}
    pos = 0
    try:
        while pos < len(raw):
            n = raw[pos]
            name = raw[pos + 1: pos + 1 + n].decode()
            pos += 1 + n
            vtype = raw[pos]
            pos += 1
            if vtype in (0, 1):
                headers[name] = vtype == 0
            elif vtype in (6, 7):
                (length,) = struct.unpack_from(">H", raw, pos)
                data = raw[pos + 2: pos + 2 + length]
                if len(data) != length:
                    raise EventStreamError("header value runs past the headers")
                headers[name] = data.decode() if vtype == 7 else data
                pos += 2 + length
            elif vtype in _FIXED:
                size = _FIXED[vtype]
                data = raw[pos: pos + size]
                if len(data) != size:
                    raise EventStreamError("header value runs past the headers")
                headers[name] = data if vtype == 9 else int.from_bytes(data, "big", signed=True)
                pos += size
            else:
                raise EventStreamError(f"unknown header value type {vtype}")
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventStreamError(f"malformed headers: {exc}") from None
    return headers


class EventStreamDecoder:
    """Feed bytes as they arrive; get back every message completed by them."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[EventMessage]:
        self._buf += data
        out: list[EventMessage] = []
        while len(self._buf) >= 12:
            total, hlen, crc = _PRELUDE.unpack_from(self._buf, 0)
            if zlib.crc32(self._buf[:8]) != crc:
                raise EventStreamError("prelude CRC mismatch")
            if total < 16 or total > MAX_MESSAGE or hlen > total - 16:
                raise EventStreamError(f"bad message length {total} (headers {hlen})")
            if len(self._buf) < total:
                break
            frame = bytes(self._buf[:total])
            del self._buf[:total]
            (mcrc,) = struct.unpack_from(">I", frame, total - 4)
            if zlib.crc32(frame[:-4]) != mcrc:
                raise EventStreamError("message CRC mismatch")
            out.append(EventMessage(_parse_headers(frame[12:12 + hlen]), frame[12 + hlen:-4]))
        return out
