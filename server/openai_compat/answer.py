"""The router's events as OpenAI's answer: one ``chat.completion`` object, or a stream of
``chat.completion.chunk`` lines ending in ``data: [DONE]``.

``open_answer`` pulls events until the first content before anything is sent, so every failure before it
(no provider, all failed, a request the provider refused) is a real HTTP status the SDK raises as its typed
error, streaming or not. Failover before the first content is invisible. A provider that fails after text
was streamed cannot be hidden (the client already printed it): the stream ends with an ``{"error": ...}``
line, which the SDK raises as ``APIError``. Without streaming, the router's ``Discarded`` simply restarts the
collected answer, so failover mid-answer is invisible there too.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from server.errors import ApiError, error_body
from server.providers.types import (
    Attempt,
    ChatRequest,
    Discarded,
    ProviderError,
    RouterEvent,
    Stop,
    TextDelta,
    ToolCall,
    Usage,
)

log = logging.getLogger(__name__)
FINISH = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length", "refusal": "content_filter",
          "stop_sequence": "stop"}
_CONTENT = (TextDelta, ToolCall, Usage, Stop)
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def provider_error(exc: ProviderError) -> ApiError:
    """A provider's refusal of the request is the client's 400; anything else is a bad gateway."""
    return ApiError("PROVIDER_ERROR", exc.message, status=400 if exc.kind == "bad_request" else 502)


def usage_body(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens}


def tool_call_body(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": call.id, "type": "function",
                            "function": {"name": call.name, "arguments": _dumps(call.arguments)}}
    return body if index is None else {"index": index, **body}


@dataclass
class Answer:
    """A router stream opened up to its first content; ``held`` are the events already pulled."""

    events: AsyncGenerator[RouterEvent, None]
    held: list[RouterEvent]
    requested_model: str
    id: str = field(default_factory=lambda: "chatcmpl-" + secrets.token_urlsafe(18))
    created: int = field(default_factory=lambda: int(time.time()))
    model: str = ""

    async def all_events(self) -> AsyncIterator[RouterEvent]:
        async with aclosing(self.events) as rest:
            for event in self.held:
                yield self._note(event)
            self.held = []
            async for event in rest:
                yield self._note(event)

    def _note(self, event: RouterEvent) -> RouterEvent:
        if isinstance(event, Attempt):
            self.model = event.model
        return event

    async def close(self) -> None:
        """End the router's stream (idempotent); its own clean-up releases a breaker probe it held."""
        await self.events.aclose()


async def open_answer(router: Any, tenant_id: str, request: ChatRequest) -> Answer:
    """Start the turn and wait for its first content; failures before it raise as ``ApiError``."""
    events: AsyncGenerator[RouterEvent, None] = router.stream(tenant_id, request)
    held: list[RouterEvent] = []
    try:
        async for event in events:
            held.append(event)
            if isinstance(event, _CONTENT):
                break
    except ProviderError as exc:
        await events.aclose()
        raise provider_error(exc) from None
    except BaseException:
        await events.aclose()
        raise
    answer = Answer(events, held, request.model)
    answer.model = next((e.model for e in reversed(held) if isinstance(e, Attempt)), request.model)
    return answer


async def complete(answer: Answer) -> dict[str, Any]:
    """The whole answer as one ``chat.completion`` object (a discarded partial answer is dropped)."""
    text: list[str] = []
    calls: list[ToolCall] = []
    usage, stop = Usage(), "end_turn"
    try:
        async for event in answer.all_events():
            if isinstance(event, TextDelta):
                text.append(event.text)
            elif isinstance(event, ToolCall):
                calls.append(event)
            elif isinstance(event, Usage):
                usage = event
            elif isinstance(event, Stop):
                stop = event.reason
            elif isinstance(event, Discarded):
                text.clear()
                calls.clear()
    except ProviderError as exc:
        raise provider_error(exc) from None
    finally:
        await answer.close()  # the router's stream, closed now even when we were cancelled mid-answer
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or (None if calls else ""),
                               "refusal": None}
    if calls:
        message["tool_calls"] = [tool_call_body(c) for c in calls]
    finish = "tool_calls" if calls else FINISH.get(stop, "stop")
    return {"id": answer.id, "object": "chat.completion", "created": answer.created, "model": answer.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage_body(usage)}


def _line(obj: dict[str, Any]) -> bytes:
    return b"data: " + _dumps(obj).encode() + b"\n\n"


async def chunks(answer: Answer, include_usage: bool) -> AsyncIterator[bytes]:
    """OpenAI's SSE stream: a role chunk, content and tool-call deltas, the finish chunk, the usage chunk when
    asked for (``stream_options.include_usage``: then every chunk carries ``usage``, null but the last), and
    ``data: [DONE]``."""
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _line({"id": answer.id, "object": "chat.completion.chunk", "created": answer.created,
                      "model": answer.model, "system_fingerprint": None,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                      **extra})

    usage, stop, calls, sent = Usage(), "end_turn", 0, False
    yield chunk({"role": "assistant", "content": ""})
    try:
        async for event in answer.all_events():
            if isinstance(event, TextDelta):
                sent = True
                yield chunk({"content": event.text})
            elif isinstance(event, ToolCall):
                sent = True
                yield chunk({"tool_calls": [tool_call_body(event, calls)]})
                calls += 1
            elif isinstance(event, Usage):
                usage = event
            elif isinstance(event, Stop):
                stop = event.reason
            elif isinstance(event, Discarded) and sent:
                message = (f"{event.provider} failed after part of the answer was streamed ({event.reason}); "
                           "retry the request")
                yield _line(error_body("PROVIDER_FAILED_MID_ANSWER", message, 502))
                return
    except ApiError as exc:
        yield _line(exc.body())
        return
    except ProviderError as exc:
        yield _line(provider_error(exc).body())
        return
    except Exception:
        log.exception("the chat completion stream failed")
        yield _line(error_body("INTERNAL_ERROR", "the answer failed; see the server log", 500))
        return
    finally:  # a client gone mid-stream closes this generator: the router's stream (and its breaker probe) now
        await answer.close()
    yield chunk({}, "tool_calls" if calls else FINISH.get(stop, "stop"))
    if include_usage:
        yield _line({"id": answer.id, "object": "chat.completion.chunk", "created": answer.created,
                     "model": answer.model, "system_fingerprint": None, "choices": [], "usage": usage_body(usage)})
    yield b"data: [DONE]\n\n"
