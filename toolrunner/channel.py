"""The host's end of the runner protocol over an asyncio stream pair (docs/design.md §2).

One reader task routes the runner's frames to the calls waiting for them, so many calls share one channel.
Everything the runner sends is treated as untrusted: frame size, output size, chunk volume and error codes
are bounded here. A call whose coroutine is cancelled tells the runner to stop it; a channel that breaks fails
every call in flight with ``SANDBOX_DIED`` (the manager may refine that to ``OOM_KILLED``).

A runner can also stop answering without its stream ending (SIGSTOP, a wedged main loop, a dead process whose
stdout someone else holds open), and a call can legitimately run for hours without a frame, so silence alone
proves nothing. While anything waits on the runner, a watchdog pings it once it has been quiet for a fifth of
``unresponsive_after_s``, and a call that passes ``timeout_s + grace_s`` pings it too; any frame at all
counts as an answer. A ping left unanswered for ``unresponsive_after_s`` breaks the channel with
``SANDBOX_UNRESPONSIVE``, which fails every call in flight at once instead of letting each run to its own
deadline; the manager then replaces the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from toolrunner.logcap import CappedLog, shown
from toolrunner.protocol import (
    HEADER,
    MAX_OUTPUT_CAP,
    MAX_RESET_WAIT_S,
    MAX_TIMEOUT_S,
    PROTOCOL_VERSION,
    FrameError,
    cut_text,
    decode,
    encode,
    frame_length,
)
from toolrunner.results import ToolResult, error_result

ChunkCallback = Callable[[str, str], Awaitable[None]]
log = logging.getLogger(__name__)
HOLDS = frozenset({"sessions", "calls", "repls", "background"})  # what a runner's ``holds`` may count
NOTE_SLACK = 4096  # room for the runner's truncation and continuation notes beyond the output cap
DIED, UNRESPONSIVE = "SANDBOX_DIED", "SANDBOX_UNRESPONSIVE"
MAX_FRAME_ID = 2**53  # ids stay exact in every JSON reader; a runner claiming more is not believed


class ChannelError(Exception):
    """The channel cannot be used: it broke, or the runner's hello was wrong."""


class RunnerChannel:
    """Multiplexes calls to one runner by id. Call `hello()` first; it starts the reader task."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        grace_s: float = 5.0,
        control_timeout_s: float = 10.0,
        unresponsive_after_s: float = 10.0,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.grace_s = grace_s
        self.control_timeout_s = control_timeout_s
        self.unresponsive_after_s = unresponsive_after_s
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Queue[tuple[str, Any, Any]]] = {}
        self._chunk_budget: dict[int, int] = {}
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.broken: str | None = None
        self._log = CappedLog(log)  # lines quoting what the runner sent: capped and rate-limited
        self.broken_code = DIED  # the error code of the calls a broken channel fails
        self.info: dict[str, Any] = {}
        # Liveness: when the runner last sent a frame, how many it sent, since when a ping is unanswered.
        self._last_frame = time.monotonic()
        self._frames = 0
        self._probe_since: float | None = None
        self._busy_since = time.monotonic()
        self._busy = asyncio.Event()  # set while a call or reply waits on the runner
        self._activity = asyncio.Event()  # set by every frame and by the break

    async def hello(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait for the runner's hello, check the version, and start routing frames."""
        try:
            async with asyncio.timeout(timeout_s):
                msg = await self._read_frame()
        except (TimeoutError, FrameError, asyncio.IncompleteReadError, ConnectionError) as exc:
            self._break(f"no hello from the runner: {exc or type(exc).__name__}")
            raise ChannelError(self.broken) from None
        if msg.get("type") != "hello" or msg.get("version") != PROTOCOL_VERSION:
            self._break(
                f"unexpected first frame from the runner: type={shown(msg.get('type'))} "
                f"version={shown(msg.get('version'))} (want hello, version {PROTOCOL_VERSION})"
            )
            raise ChannelError(self.broken)
        self.info = msg
        self._heard()
        self._task = asyncio.create_task(self._read_loop(), name="runner-channel-reader")
        self._watchdog = asyncio.create_task(self._watch(), name="runner-channel-watchdog")
        return msg

    async def call(
        self,
        session: str,
        tool: str,
        input: dict[str, Any],
        *,
        timeout_s: float,
        output_cap: int,
        on_chunk: ChunkCallback | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """Run one tool call; always returns a result (errors included) unless the caller is cancelled.
        ``call_id``, the host's id of the call, is sent with it: the runner names it in the call's proxy
        credential (docs/egress.md)."""
        started = time.perf_counter()
        output_cap = max(0, min(output_cap, MAX_OUTPUT_CAP))
        if self.broken is not None:
            return error_result(tool, self.broken_code, self.broken)
        if self._task is None:
            return error_result(tool, "INTERNAL", "the channel is not open: call hello() first")
        cid = next(self._ids)
        queue: asyncio.Queue[tuple[str, Any, Any]] = asyncio.Queue()
        self._calls[cid] = queue
        self._chunk_budget[cid] = output_cap
        self._mark_busy()
        streamed = 0
        timeout_s = min(max(timeout_s, 0.001), MAX_TIMEOUT_S)
        frame = {
            "type": "call",
            "id": cid,
            "session": session,
            "tool": tool,
            "input": input,
            "timeout_s": timeout_s,
            "output_cap": output_cap,
            "stream": on_chunk is not None,
        }
        if call_id is not None:
            frame["call_id"] = call_id
        try:
            # The deadline covers the send too: a runner that stopped reading fills the pipe and blocks drain().
            async with asyncio.timeout(timeout_s + self.grace_s):
                try:
                    await self._send(frame)
                except ChannelError as exc:
                    return error_result(tool, self.broken_code, str(exc))
                except (FrameError, TypeError, ValueError) as exc:
                    return error_result(tool, "INVALID_INPUT", f"the input cannot be sent to the sandbox: {exc}")
                while True:
                    kind, a, b = await queue.get()
                    if kind == "chunk":
                        if on_chunk is not None and streamed < output_cap:
                            data = _head(b, output_cap - streamed)
                            streamed += len(data.encode("utf-8", "surrogatepass"))
                            await on_chunk(a, data)
                        continue
                    if kind == "dead":
                        return error_result(tool, b, a, duration_ms=_ms(started))
                    return self._result(tool, a, output_cap, started)
        except TimeoutError:
            self._send_nowait({"type": "cancel", "id": cid})
            # Is it this call that hangs, or the runner? Only the runner's silence after a ping says.
            if not await self._answers():
                return error_result(tool, self.broken_code, self.broken or "", duration_ms=_ms(started))
            return error_result(
                tool,
                "TIMEOUT",
                f"the runner did not answer within {timeout_s + self.grace_s:g} s",
                duration_ms=_ms(started),
                timed_out=True,
                limit="timeout",
            )
        except BaseException:  # cancelled, or on_chunk failed: the runner must not go on working for nobody
            self._send_nowait({"type": "cancel", "id": cid})
            raise
        finally:
            self._calls.pop(cid, None)
            self._chunk_budget.pop(cid, None)

    def _result(self, tool: str, raw: Any, output_cap: int, started: float) -> ToolResult:
        try:
            result = ToolResult.model_validate(raw)
        except ValidationError as exc:
            return error_result(
                tool,
                "INTERNAL",
                f"the runner sent a malformed result: {exc.errors()[:1]}",
                duration_ms=_ms(started),
            )
        output, cut = cut_text(result.output, output_cap + NOTE_SLACK)
        if cut or result.tool_name != tool:
            result = result.model_copy(
                update={
                    "output": output,
                    "truncated": result.truncated or cut,
                    "limit": result.limit or ("output" if cut else None),
                    "tool_name": tool,
                }
            )
        return result

    async def cancel(self, call_id: int) -> None:
        """Ask the runner to stop a call now; its result still arrives, with error CANCELLED."""
        await self._send({"type": "cancel", "id": call_id})

    async def close_session(self, session: str) -> ToolResult:
        """End the session's shell state, REPL and background processes."""
        return await self.call_control({"type": "close_session", "session": session}, "close_session")

    async def call_control(self, frame: dict[str, Any], tool: str) -> ToolResult:
        if self.broken is not None:
            return error_result(tool, self.broken_code, self.broken)
        cid = next(self._ids)
        queue: asyncio.Queue[tuple[str, Any, Any]] = asyncio.Queue()
        self._calls[cid] = queue
        self._mark_busy()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.control_timeout_s):
                await self._send({**frame, "id": cid})
                kind, a, b = await queue.get()
        except TimeoutError:
            return error_result(
                tool, "TIMEOUT", f"no answer within {self.control_timeout_s:g} s", duration_ms=_ms(started)
            )
        finally:
            self._calls.pop(cid, None)
        if kind == "dead":
            return error_result(tool, b, a, duration_ms=_ms(started))
        return self._result(tool, a, MAX_OUTPUT_CAP, started)

    async def ping(self) -> float:
        """Round trip in milliseconds; raises ChannelError if the runner does not answer."""
        started = time.perf_counter()
        await self._reply({"type": "ping"})
        return _ms(started)

    async def stats(self) -> dict[str, Any]:
        """The container cgroup's memory, pids and CPU as the runner sees them."""
        reply = await self._reply({"type": "stats"})
        stats = reply.get("stats")
        return stats if isinstance(stats, dict) else {}

    async def holds(self, timeout_s: float = 2.0) -> dict[str, int] | None:
        """What the runner holds that a stop would lose (``sessions``, ``repls``, ``background``, ``calls``),
        from the ``holds`` of its ``stats`` answer; None when it does not say (or not in time)."""
        try:
            reply = await self._reply({"type": "stats"}, timeout_s=timeout_s)
        except (ChannelError, ConnectionError, OSError):
            return None
        holds = reply.get("holds")
        if not isinstance(holds, dict):
            return None
        return {k: v for k, v in holds.items()  # the runner is untrusted: known names, plausible counts only
                if k in HOLDS and isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 31}

    async def reset(self, wait_s: float) -> dict[str, Any]:
        """End every call a previous host left running in this runner; number our frames past its ids.

        Sent once on re-attaching, before any call: the runner cancels what is in flight (killing its
        processes), answers when it has ended (``left`` counts what had not within ``wait_s``) and names the
        highest id it has seen, so no id of ours can be mistaken for an old call's.
        """
        wait_s = min(max(wait_s, 0.0), MAX_RESET_WAIT_S)
        reply = await self._reply({"type": "reset", "wait_s": wait_s}, timeout_s=wait_s + self.control_timeout_s)
        max_id = reply.get("max_id")
        if isinstance(max_id, bool) or not isinstance(max_id, int) or not 0 <= max_id < MAX_FRAME_ID:
            raise ChannelError(f"the runner's reset answer has no plausible max_id: {str(max_id)[:40]}")
        self._ids = itertools.count(max(next(self._ids), max_id + 1))
        return reply

    async def _reply(self, frame: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        if self.broken is not None:
            raise ChannelError(self.broken)
        cid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[cid] = fut
        self._mark_busy()
        deadline = self.control_timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(deadline):
                await self._send({**frame, "id": cid})
                return await fut
        except TimeoutError:
            raise ChannelError(f"no answer to {frame['type']} within {deadline:g} s") from None
        finally:
            self._replies.pop(cid, None)

    async def close(self) -> None:
        """Stop reading, close the stream, fail whatever is still waiting."""
        self._break("the channel was closed by the host")
        self._log.flush()
        for task in (self._task, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._writer.wait_closed()

    async def _send(self, frame: dict[str, Any]) -> None:
        if self.broken is not None:
            raise ChannelError(self.broken)
        try:
            self._writer.write(encode(frame))
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._break(f"writing to the runner failed: {exc}")

    def _send_nowait(self, frame: dict[str, Any]) -> None:
        if self.broken is None and not self._writer.is_closing():
            with contextlib.suppress(Exception):
                self._writer.write(encode(frame))

    async def _read_frame(self) -> dict[str, Any]:
        header = await self._reader.readexactly(HEADER.size)
        return decode(await self._reader.readexactly(frame_length(header)))

    async def _read_loop(self) -> None:
        try:
            while True:
                msg = await self._read_frame()
                self._heard()
                self._route(msg)
        except asyncio.IncompleteReadError:
            self._break("the runner's stream ended (the sandbox process exited)")
        except FrameError as exc:
            self._break(f"protocol error from the runner: {exc}")
        except ConnectionError as exc:
            self._break(f"the runner's stream broke: {exc}")
        except Exception as exc:  # a reader that dies silently would leave every call waiting
            log.exception("runner channel reader failed")
            self._break(f"the channel reader failed: {type(exc).__name__}: {exc}")

    def _route(self, msg: dict[str, Any]) -> None:
        kind, mid = msg.get("type"), msg.get("id")
        if kind in ("pong", "stats", "reset"):
            fut = self._replies.get(mid) if isinstance(mid, int) else None
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        queue = self._calls.get(mid) if isinstance(mid, int) else None
        if kind == "result":
            if queue is not None:
                queue.put_nowait(("result", msg.get("result"), None))
            elif mid is None:
                self._log.warning("protocol-error", "runner reported a protocol error: %s", msg.get("result"))
        elif kind == "chunk":
            data, stream = msg.get("data"), msg.get("stream")
            budget = self._chunk_budget.get(mid, 0) if isinstance(mid, int) else 0
            if (
                isinstance(mid, int)
                and queue is not None
                and isinstance(data, str)
                and budget > 0
                and stream in ("stdout", "stderr")
            ):
                data = _head(data, budget)
                self._chunk_budget[mid] = budget - len(data.encode("utf-8", "surrogatepass"))
                queue.put_nowait(("chunk", stream, data))
        else:
            self._log.warning("unknown-frame", "runner sent an unknown frame type %s", kind)

    # ---- liveness -----------------------------------------------------------------------------------

    def _heard(self) -> None:
        """Any frame proves the runner's main loop is alive: the pending ping counts as answered."""
        self._last_frame = time.monotonic()
        self._frames += 1
        self._probe_since = None
        self._activity.set()

    def _mark_busy(self) -> None:
        if not self._busy.is_set():
            self._busy_since = time.monotonic()
            self._busy.set()

    def _probe(self) -> None:
        """Send a ping unless one is pending; its pong (an id nobody waits for) is dropped by _route."""
        if self._probe_since is None and self.broken is None:
            self._probe_since = time.monotonic()
            self._send_nowait({"type": "ping", "id": next(self._ids)})

    def _overdue(self) -> bool:
        """Break the channel if the pending ping went unanswered for the bound; True if it is broken."""
        if self._probe_since is not None and time.monotonic() - self._probe_since >= self.unresponsive_after_s:
            self._break(
                f"the runner stopped answering: nothing from it within {self.unresponsive_after_s:g} s of a ping",
                UNRESPONSIVE,
            )
        return self.broken is not None

    async def _watch(self) -> None:
        """While anything waits on the runner: ping it once quiet, and break the channel if it stays silent.

        Idle channels cost nothing (it waits on an event), and a call shorter than the quiet period sends no
        ping, so the fast path is untouched.
        """
        try:
            while not self._overdue():
                if not (self._calls or self._replies):
                    self._busy.clear()
                    await self._busy.wait()
                    continue
                now = time.monotonic()
                if self._probe_since is None:
                    since = max(self._last_frame, self._busy_since)
                    quiet = self.unresponsive_after_s / 5
                    if now - since >= quiet:
                        self._probe()
                        wake = now + self.unresponsive_after_s
                    else:
                        wake = since + quiet
                else:
                    wake = self._probe_since + self.unresponsive_after_s
                await asyncio.sleep(max(wake - now, 0.001))
        except Exception:  # a watchdog that dies silently would bring back the hang it exists to prevent
            log.exception("runner channel watchdog failed")
            self._break("the channel watchdog failed")

    async def _answers(self) -> bool:
        """Ping the runner and wait (at most the bound) for any frame: False if the channel broke instead."""
        heard = self._frames
        self._probe()
        while self._frames == heard and not self._overdue():
            assert self._probe_since is not None  # only a frame clears it, and none came
            left = self._probe_since + self.unresponsive_after_s - time.monotonic()
            self._activity.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(left, 0.001)):
                    await self._activity.wait()
        return self.broken is None

    def _break(self, reason: str, code: str = DIED) -> None:
        """Fail everything waiting, once. A runner that stopped reading also blocks our drain(): drop the
        writer then, so that a call stuck sending fails now rather than at its own deadline."""
        if self.broken is not None:
            return
        self.broken = reason
        self.broken_code = code
        for queue in self._calls.values():
            queue.put_nowait(("dead", reason, code))
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(ChannelError(reason))
        self._activity.set()
        self._busy.set()
        if code == UNRESPONSIVE:
            self._writer.transport.abort()


def _head(text: str, limit: int) -> str:
    """The first `limit` bytes of `text` (whole characters only), with no note: chunks are raw output."""
    raw = text.encode("utf-8", "surrogatepass")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
