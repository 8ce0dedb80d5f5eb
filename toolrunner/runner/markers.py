"""Cutting a call's output stream at its end marker, which may arrive split across reads.

The session shell ends every call by writing ``NUL nonce LF`` on stdout and stderr once the call's
processes are dead; everything before it is the command's output and is passed on at once, except a tail
that could be the marker's start. The nonce is made after the command ended, so no command can print it.
"""

from __future__ import annotations


class Cut:
    """One stream of a call: passes output through, holding back what might be the start of the end marker."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.buf = bytearray()
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The part of `data` that is output; nothing once the marker has passed."""
        if self.done:
            return b""
        self.buf += data
        i = self.buf.find(self.marker)
        if i >= 0:
            out = bytes(self.buf[:i])
            self.done = True
            self.buf.clear()
            return out
        keep = self._held()
        out = bytes(self.buf[: len(self.buf) - keep])
        del self.buf[: len(self.buf) - keep]
        return out

    def _held(self) -> int:
        """Length of the longest suffix that is a proper prefix of the marker (which starts with NUL)."""
        j = self.buf.find(b"\0", max(0, len(self.buf) - len(self.marker) + 1))
        while j >= 0:
            if self.marker.startswith(self.buf[j:]):
                return len(self.buf) - j
            j = self.buf.find(b"\0", j + 1)
        return 0

    def flush(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out
