"""Cutting a call's output stream at its end marker, which may arrive split across reads.

The persistent shell ends every call by writing ``NUL RAND rc saved LF`` on stdout and stderr; everything
before it is the command's output and is passed on at once, except a tail that could be the marker's start.
"""

from __future__ import annotations


class Cut:
    """One stream of a call: passes output through, holding back what might be the start of the end marker."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.buf = bytearray()
        self.tail: bytearray | None = None  # what follows the marker, up to its newline

    @property
    def done(self) -> bool:
        return self.tail is not None and b"\n" in self.tail

    def feed(self, data: bytes) -> bytes:
        if self.tail is not None:
            if len(self.tail) < 256:
                self.tail += data
            return b""
        self.buf += data
        i = self.buf.find(self.marker)
        if i >= 0:
            out = bytes(self.buf[:i])
            self.tail = bytearray(self.buf[i + len(self.marker) :])
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

    def status(self) -> tuple[int, int]:
        """(exit code, save status) from the marker line."""
        assert self.tail is not None
        try:
            rc, ok = self.tail.split(b"\n", 1)[0].split()
            return int(rc), int(ok)
        except ValueError:
            return 1, 1
