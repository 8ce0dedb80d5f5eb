"""Behaviour every adapter shares, checked against each wire format's fake server over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fakes import Reply
from fakes.harness import CASES, KEY, WireCase, adapter, calls_of, drain, request, run, text_of
from fakes.server import FakeServer

from server.providers.base import Timeouts
from server.providers.types import Stop, TextDelta, Usage


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> WireCase:
    return CASES[request.param]


@pytest.fixture
def fake(case: WireCase) -> Iterator[FakeServer]:
    with case.fake() as server:
        yield server


def stream(case: WireCase, fake: FakeServer, **kw: Any) -> tuple[list[Any], Any]:
    timeouts = kw.pop("timeouts", None)

    async def go(client: httpx.AsyncClient) -> tuple[list[Any], Any]:
        return await drain(adapter(case, fake, client, timeouts=timeouts).stream(request(case.model, **kw)))

    return run(go)


def test_text_streams_with_usage_and_stop(case: WireCase, fake: FakeServer) -> None:
    """Text arriving over time comes out as it arrives (several deltas), then usage and the stop reason."""
    fake.script([Reply.text("The quick brown fox.", usage=(31, 9)).with_(event_delay=0.02)])
    events, err = stream(case, fake)
    assert err is None
    assert text_of(events) == "The quick brown fox."
    assert len([e for e in events if isinstance(e, TextDelta)]) > 1
    assert events[-2:] == [Usage(input_tokens=31, output_tokens=9), Stop(reason="end_turn")]


def test_deltas_of_one_read_are_merged(case: WireCase, fake: FakeServer) -> None:
    """Deltas that arrive in the same network read become one TextDelta (fewer events, no added wait)."""
    fake.script([Reply.many_deltas(500, "ab")])
    events, err = stream(case, fake)
    assert err is None
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert "".join(d.text for d in deltas) == "ab" * 500
    assert len(deltas) < 100


def test_tool_call_split_across_chunks(case: WireCase, fake: FakeServer) -> None:
    """A tool call whose arguments arrive in fragments is emitted once, whole, after the text before it."""
    args = {"command": "grep -rn 'needle' /workspace | head -5", "timeout_s": 30}
    fake.script([Reply.tool_call("bash", args, text="Searching.").with_(split_bytes=7)])
    events, err = stream(case, fake)
    assert err is None
    assert text_of(events) == "Searching."
    (call,) = calls_of(events)
    assert (call.name, call.arguments) == ("bash", args)
    assert call.id
    assert events[-1] == Stop(reason="tool_use")


def test_two_tool_calls_keep_their_order(case: WireCase, fake: FakeServer) -> None:
    """Two tool calls in one answer come out in order with distinct ids."""
    fake.script([Reply.tool_calls(("bash", {"command": "ls"}), ("read_file", {"path": "a.txt"}))])
    events, err = stream(case, fake)
    assert err is None
    calls = calls_of(events)
    assert [(c.name, c.arguments) for c in calls] == [
        ("bash", {"command": "ls"}),
        ("read_file", {"path": "a.txt"}),
    ]
    assert calls[0].id != calls[1].id


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("overloaded", "retryable"),
        ("rate_limit", "retryable"),
        ("auth", "auth"),
        ("bad_request", "bad_request"),
    ],
)
def test_error_inside_200_stream_is_classified(case: WireCase, fake: FakeServer, kind: Any, expected: str) -> None:
    """An error object inside a 200 stream becomes a ProviderError of the right kind."""
    fake.script([Reply.stream_error(kind, after_text="Partial")])
    events, err = stream(case, fake)
    assert text_of(events) == "Partial"
    assert err is not None and err.kind == expected and err.provider == case.provider


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, "retryable"),
        (503, "retryable"),
        (529, "retryable"),
        (401, "auth"),
        (403, "auth"),
        (402, "credit"),
        (400, "bad_request"),
    ],
)
def test_http_error_is_classified(case: WireCase, fake: FakeServer, status: int, expected: str) -> None:
    """An HTTP error status becomes a ProviderError of the right kind, carrying the status."""
    fake.script([Reply.http_error(status)])
    events, err = stream(case, fake)
    assert events == []
    assert err is not None and (err.kind, err.status) == (expected, status)


def test_retry_after_seconds_and_http_date(case: WireCase, fake: FakeServer) -> None:
    """Retry-After is read both as seconds and as an HTTP date."""
    fake.script(
        [
            Reply.http_error(429, retry_after=7),
            Reply.http_error(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
        ]
    )
    _, first = stream(case, fake)
    _, second = stream(case, fake)
    assert first is not None and first.retry_after == 7.0
    assert second is not None and second.retry_after == 0.0  # a date in the past means "now"


def test_mid_stream_disconnect_is_retryable(case: WireCase, fake: FakeServer) -> None:
    """A connection cut after some text is a retryable error, after the text already received."""
    fake.script([Reply.disconnect("Half an ans")])
    events, err = stream(case, fake)
    assert text_of(events) == "Half an ans"
    assert err is not None and err.kind == "retryable"


def test_slow_first_byte_hits_read_idle_timeout(case: WireCase, fake: FakeServer) -> None:
    """A provider silent for longer than the read-idle timeout fails as retryable instead of hanging."""
    fake.script([Reply.text("late").with_(first_byte_delay=1.0)])
    events, err = stream(case, fake, timeouts=Timeouts(connect_s=2, read_idle_s=0.2))
    assert events == []
    assert err is not None and err.kind == "retryable" and "timed out" in err.message


def test_connection_refused_is_retryable(case: WireCase) -> None:
    """Nobody listening is a retryable error, not a crash."""
    with case.fake() as fake:
        port = fake.port
    gone = case.credential(None, base_url=f"http://127.0.0.1:{port}")

    async def go(client: httpx.AsyncClient) -> Any:
        from server.providers.registry import make_adapter

        return await drain(make_adapter(case.provider, client, gone).stream(request(case.model)))

    events, err = run(go)
    assert events == [] and err is not None and err.kind == "retryable"


def test_key_never_appears_in_errors_or_reprs(case: WireCase, fake: FakeServer) -> None:
    """A provider that echoes the key in its error message does not leak it into the error or any repr."""
    fake.script(
        [
            Reply.http_error(401, message=f"invalid key {KEY} (x-api-key: {KEY})"),
            Reply.stream_error("auth", message=f"bad Bearer {KEY}"),
        ]
    )
    _, first = stream(case, fake)
    _, second = stream(case, fake)
    for err in (first, second):
        assert err is not None
        for text in (str(err), repr(err), err.message):
            assert KEY not in text and "SECRETKEY" not in text
    cred = case.credential(fake)
    assert KEY not in repr(cred) and KEY not in str(cred)

    async def adapter_repr(client: httpx.AsyncClient) -> str:
        return repr(adapter(case, fake, client))

    assert KEY not in run(adapter_repr)


def test_json_body_instead_of_stream_is_an_error(case: WireCase, fake: FakeServer) -> None:
    """A 200 answered with a JSON error body instead of a stream is classified, never taken as an answer."""
    body = b'{"error": {"type": "overloaded_error", "message": "busy, try later"}}'
    fake.script([Reply(raw_body=body, headers={"content-type": "application/json"})])
    events, err = stream(case, fake)
    assert events == []
    assert err is not None and err.kind == "retryable" and "busy" in err.message
