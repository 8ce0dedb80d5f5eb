"""What every HTTP adapter shares: the POST that opens a stream, HTTP error classification, Retry-After
parsing, the loop that runs a wire parser over framed batches, and turning transport failures into
``ProviderError``s with redacted messages.

An adapter subclasses ``HttpAdapter`` and implements ``stream`` as ``_open`` + ``_drive(batches, parser)``;
only ``_open`` touches httpx, so a failed response is classified the same way for every wire format.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from server.providers.credentials import ProviderCredential, redact
from server.providers.framing import FramingError, WireParser
from server.providers.types import ChatRequest, ErrorKind, ProviderError, StreamEvent, TextDelta
from server.providers.urlguard import ProviderUrlForbidden

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_ERROR_BODY = 64 * 1024
T = TypeVar("T")
_CREDIT_WORDS = ("insufficient_quota", "credit", "billing", "payment", "quota exceeded")


@dataclass(frozen=True)
class Timeouts:
    """Connect timeout and read-idle timeout (longest silence allowed between two bytes of a stream)."""

    connect_s: float = 10.0
    read_idle_s: float = 120.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect_s, read=self.read_idle_s, write=self.connect_s,
                             pool=self.connect_s)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_message(body: str) -> str:
    """The human part of a provider's JSON error body, else the body itself (cut short)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("Message") or err.get("type") or json.dumps(err)
            kind = err.get("type") or err.get("status") or err.get("code")
            return f"{kind}: {msg}"[:500] if kind and kind != msg else str(msg)[:500]
        if isinstance(err, str):
            return err[:500]
        if "message" in data:
            return str(data["message"])[:500]
    return body.strip()[:500]


def classify_status(status: int, message: str) -> ErrorKind:
    """HTTP status (+ message words for quota/billing) → what the router should do."""
    lowered = message.lower()
    if status == 402 or (status in (400, 403, 429) and any(w in lowered for w in _CREDIT_WORDS)):
        return "credit"
    if status in (401, 403):
        return "auth"
    if status in RETRYABLE_STATUS or status >= 500 or status == 404:
        return "retryable"
    return "bad_request"


def classify_words(kind_text: str) -> ErrorKind:
    """An in-stream error's type/code text → kind (Anthropic, Bedrock and Gemini names all covered)."""
    t = kind_text.lower()
    if any(w in t for w in ("credit", "billing", "insufficient_quota", "payment")):
        return "credit"
    if any(w in t for w in ("authentication", "permission", "accessdenied", "unauthenticated",
                            "permission_denied", "invalid_api_key", "unauthorized")):
        return "auth"
    if any(w in t for w in ("invalid_request", "validation", "invalid_argument", "bad_request",
                            "context_length")):
        return "bad_request"
    return "retryable"


class HttpAdapter:
    """Base of the HTTP adapters: owns nothing but references to the shared client and a credential."""

    def __init__(self, provider: str, client: httpx.AsyncClient, credential: ProviderCredential,
                 base_url: str, timeouts: Timeouts | None = None) -> None:
        self.provider = provider
        self.client = client
        self.credential = credential
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        self.requests_sent = 0  # POSTs handed to httpx: a failure with none sent was caused by the request

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self.provider!r}, base_url={self.base_url!r})"

    def stream(self, req: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        raise NotImplementedError

    def error(self, kind: ErrorKind, message: str, status: int | None = None,
              retry_after: float | None = None) -> ProviderError:
        return ProviderError(kind, status, retry_after, redact(message, self.credential.secrets()),
                             self.provider)

    async def _drive(self, batches: AsyncIterator[list[T]], parser: WireParser[T],
                     ) -> AsyncGenerator[StreamEvent, None]:
        """Run ``parser`` over the batches, merging the text pieces of each batch into one TextDelta (except
        the very first piece; text received before an error is still delivered before the error)."""
        text: list[str] = []
        first = True  # the first piece goes out at once: merging must not delay time-to-first-token
        try:
            async for batch in batches:
                for item in batch:
                    try:
                        events = parser.feed(item)
                    except ProviderError:
                        if text:
                            yield TextDelta(text="".join(text))
                        raise
                    for event in events:
                        if isinstance(event, str):
                            if first:
                                first = False
                                yield TextDelta(text=event)
                            else:
                                text.append(event)
                            continue
                        if text:
                            yield TextDelta(text="".join(text))
                            text = []
                        yield event
                    if parser.done:
                        break
                if text:
                    yield TextDelta(text="".join(text))
                    text = []
                if parser.done:
                    return
            closing = parser.finish()
        except FramingError as exc:
            raise self.error("retryable", f"malformed stream: {exc}") from None
        for event in closing:
            yield event

    @asynccontextmanager
    async def _open(self, url: str, headers: Mapping[str, str], body: dict[str, Any] | bytes,
                    ) -> AsyncIterator[httpx.Response]:
        """POST (a JSON object, or bytes already serialised and signed) and yield the streaming response;
        any failure leaves as a ProviderError."""
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.requests_sent += 1
        try:
            async with self.client.stream("POST", url, headers=dict(headers), content=content,
                                          timeout=self.timeouts.httpx()) as resp:
                if resp.status_code >= 400:
                    raw = b""
                    async for chunk in resp.aiter_bytes():
                        raw += chunk
                        if len(raw) > MAX_ERROR_BODY:
                            break
                    message = error_message(raw.decode("utf-8", "replace")) or resp.reason_phrase
                    raise self.error(classify_status(resp.status_code, message), message, resp.status_code,
                                     parse_retry_after(resp.headers.get("retry-after")))
                if resp.headers.get("content-type", "").startswith("application/json"):
                    # a gateway that ignored stream=true, or an error dressed as a 200
                    raw = (await resp.aread())[:MAX_ERROR_BODY]
                    message = error_message(raw.decode("utf-8", "replace"))
                    raise self.error(classify_words(message), f"expected a stream, got JSON: {message}",
                                     resp.status_code)
                yield resp
        except ProviderUrlForbidden as exc:  # the guarded client refused the address it resolved
            raise self.error("forbidden", exc.message) from None
        except httpx.TimeoutException as exc:
            raise self.error("retryable", f"timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise self.error("retryable", f"connection failed ({type(exc).__name__}: {exc})") from None


def parse_json_object(text: str) -> dict[str, Any] | None:
    """A JSON object or None (for accumulated tool arguments; empty means ``{}``)."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
