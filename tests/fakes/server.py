"""A tiny real HTTP/1.1 server on 127.0.0.1 (ephemeral port) in a background thread, shared by every fake.

Raw asyncio rather than a framework so that the bytes on the wire are exactly the scripted ones: chunked
bodies (a cut connection is then visible to the client as an incomplete body), pauses before the first byte,
keep-alive. Each request takes the next scripted ``Reply`` (or ``default``) and is recorded with its headers
and body so tests can assert the wire request.
"""

from __future__ import annotations

import asyncio
import collections
import json
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .reply import Reply, TextPart, ToolPart

Step = bytes | float | None  # bytes to send, seconds to pause, None = cut the connection


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request arrived

    def json(self) -> Any:
        return json.loads(self.body)


class Wire:
    """One wire format's rendering of a Reply; subclasses fill in the event shapes."""

    content_type = "text/event-stream"

    def start(self, reply: Reply, req: RecordedRequest) -> list[bytes]:
        return []

    def text_block(self, index: int, pieces: list[str]) -> list[tuple[bytes, bool]]:
        raise NotImplementedError

    def tool_block(self, index: int, tool: ToolPart) -> list[tuple[bytes, bool]]:
        raise NotImplementedError

    def finish(self, reply: Reply, req: RecordedRequest) -> list[bytes]:
        raise NotImplementedError

    def stream_error(self, reply: Reply) -> bytes:
        raise NotImplementedError

    def error_response(self, reply: Reply) -> tuple[dict[str, str], bytes]:
        raise NotImplementedError

    def render(self, reply: Reply, req: RecordedRequest) -> list[Step]:
        """The body of a 200 reply as steps; content events are counted for error_after/disconnect_after."""
        if reply.raw_body is not None:
            return [reply.raw_body]
        events: list[tuple[bytes, bool]] = [(b, False) for b in self.start(reply, req)]
        if reply.fast_deltas is not None:  # render one delta and repeat its bytes: no per-event cost
            first = reply.parts[0]
            assert isinstance(first, TextPart)
            for data, is_content in self.text_block(0, [first.text]):
                events += [(data, True)] * reply.fast_deltas if is_content else [(data, False)]
        else:
            for index, part in enumerate(reply.parts):
                if isinstance(part, TextPart):
                    events += self.text_block(index, reply.text_pieces(part.text))
                else:
                    events += self.tool_block(index, part)
        steps: list[Step] = []
        content = 0
        for data, is_content in events:
            if reply.error_after is not None and content >= reply.error_after and is_content:
                break
            if reply.disconnect_after is not None and content >= reply.disconnect_after and is_content:
                break
            steps.append(data)
            if reply.event_delay:
                steps.append(reply.event_delay)
            content += is_content
        if reply.disconnect_after is not None:
            return [*steps, None]
        if reply.error_kind is not None:
            return [*steps, self.stream_error(reply)]
        return steps + list(self.finish(reply, req))


class FakeServer:
    wire: Wire

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self._queue: collections.deque[Reply] = collections.deque()
        self.default: Reply | None = None
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fake-{type(self).__name__}", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._tls: ssl.SSLContext | None = None
        self.port = 0

    # -- public API -----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def use_tls(self, context: ssl.SSLContext) -> FakeServer:
        """Serve HTTPS with this server context (call before ``start``); see ``fakes.tls``."""
        self._tls = context
        return self

    def script(self, replies: Iterable[Reply]) -> None:
        with self._lock:
            self._queue.extend(replies)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def start(self) -> FakeServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(10)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the server -----------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0,
                                                                              ssl=self._tls))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()

        async def finish() -> None:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._loop.stop()

        self._loop.create_task(finish())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await reader.readline()
        if not line:
            return False
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        req = RecordedRequest(method, path, headers, body, time.monotonic())
        with self._lock:
            self.requests.append(req)
            reply = self._queue.popleft() if self._queue else self.default
        if reply is None:
            reply = Reply.http_error(500, "server", message="the fake has no scripted reply left")
        if reply.first_byte_delay:
            await asyncio.sleep(reply.first_byte_delay)
        if reply.status != 200:
            extra, payload = self.wire.error_response(reply)
            head = {
                "content-type": "application/json",
                "content-length": str(len(payload)),
                **extra,
                **reply.headers,
            }
            writer.write(_head(reply.status, head) + payload)
            await writer.drain()
            return True
        writer.write(
            _head(
                200,
                {
                    "content-type": self.wire.content_type,
                    "transfer-encoding": "chunked",
                    "cache-control": "no-cache",
                    **reply.headers,
                },
            )
        )
        for step in self._split(self.wire.render(reply, req), reply.split_bytes):
            if step is None:
                await writer.drain()
                writer.transport.abort()
                return False
            if isinstance(step, float):
                await writer.drain()
                await asyncio.sleep(step)
                continue
            writer.write(b"%x\r\n%s\r\n" % (len(step), step))
            if writer.transport.get_write_buffer_size() > 256 * 1024:
                await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    @staticmethod
    def _split(steps: list[Step], size: int | None) -> list[Step]:
        if not size:
            # coalesce runs of bytes so a fast stream is not one TCP write per event
            out: list[Step] = []
            run: list[bytes] = []
            size_of_run = 0
            for step in steps:
                if isinstance(step, bytes):
                    run.append(step)
                    size_of_run += len(step)
                    if size_of_run < 65536:
                        continue
                if run:
                    out.append(b"".join(run))
                    run, size_of_run = [], 0
                if not isinstance(step, bytes):
                    out.append(step)
            if run:
                out.append(b"".join(run))
            return out
        data = b"".join(s for s in steps if isinstance(s, bytes))
        tail: list[Step] = [None] if steps and steps[-1] is None else []
        return [data[i : i + size] for i in range(0, len(data), size)] + tail


def _head(status: int, headers: dict[str, str]) -> bytes:
    reason = {
        200: "OK",
        400: "Bad Request",
        401: "Unauthorized",
        402: "Payment Required",
        403: "Forbidden",
        404: "Not Found",
        408: "Request Timeout",
        429: "Too Many Requests",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
        529: "Overloaded",
    }.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
