"""A text/event-stream parser (WHATWG rules that matter here): lines in, (event, data, id) messages out.

Comment lines (the server's keep-alives) are skipped; a message without data is dropped, as browsers do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SSEMessage:
    event: str
    data: str
    id: str | None


class SSEDecoder:
    """Feed it lines (without their line ending); it answers a message at each blank line."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SSEMessage | None:
        if line == "":
            message = (SSEMessage(self._event or "message", "\n".join(self._data), self._id)
                       if self._data else None)
            self._event, self._data, self._id = "", [], None
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def iter_messages(lines: Iterator[str]) -> Iterator[SSEMessage]:
    decoder = SSEDecoder()
    for line in lines:
        if (message := decoder.feed(line)) is not None:
            yield message


async def aiter_messages(lines: AsyncIterator[str]) -> AsyncIterator[SSEMessage]:
    decoder = SSEDecoder()
    async for line in lines:
        if (message := decoder.feed(line)) is not None:
            yield message
