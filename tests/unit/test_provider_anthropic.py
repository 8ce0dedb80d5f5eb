"""The Anthropic Messages adapter's wire request: path, headers, body, tools, tool results, thinking."""

from __future__ import annotations

import json

import pytest
from fakes import FakeAnthropic, Reply
from fakes.harness import BASH, CASES, KEY, drain, request, run, send, text_of, tool_history

from server.providers.credentials import ProviderCredential
from server.providers.registry import make_adapter
from server.providers.types import Stop

CASE = CASES["anthropic"]


def test_request_shape_with_tools_and_tool_results() -> None:
    """POST /v1/messages with x-api-key, version header, stream, system, tools and a tool_result turn."""
    with FakeAnthropic() as fake:
        fake.script([Reply.text("ok")])
        events, err = send(
            CASE, fake, request("claude-sonnet-4-5", tool_history(), system="Be brief.", max_tokens=1000)
        )
        assert err is None and text_of(events) == "ok"
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    body = sent.json()
    assert body["stream"] is True and body["model"] == "claude-sonnet-4-5" and body["max_tokens"] == 1000
    assert body["system"] == "Be brief."
    assert body["tools"] == [{"name": "bash", "description": BASH.description, "input_schema": BASH.input_schema}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "list files"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls"}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ls: denied", "is_error": True}],
        },
    ]
    assert "thinking" not in body


@pytest.mark.parametrize(("effort", "budget"), [("low", 1024), ("medium", 4096), ("high", 16000), ("max", 32000)])
def test_effort_maps_to_thinking_budget(effort: str, budget: int) -> None:
    """effort becomes thinking.budget_tokens, with max_tokens raised above the budget."""
    with FakeAnthropic() as fake:
        fake.script([Reply.text("ok")])
        send(CASE, fake, request("claude-sonnet-4-5", effort=effort, max_tokens=2048))
        body = fake.requests[0].json()
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert body["max_tokens"] > budget


def test_no_thinking_switched_on_mid_tool_loop() -> None:
    """While answering tool results (thinking blocks are not kept), thinking is not requested."""
    with FakeAnthropic() as fake:
        fake.script([Reply.text("ok")])
        send(CASE, fake, request("claude-sonnet-4-5", tool_history(), effort="high"))
        assert "thinking" not in fake.requests[0].json()


def test_thinking_deltas_are_not_text_and_cache_tokens_count_as_input() -> None:
    """thinking_delta events never leak into the answer text; cache tokens are added to input usage."""
    raw = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":5,'
        b'"cache_read_input_tokens":100,"output_tokens":1}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":'
        b'{"type":"thinking","thinking":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        b'{"type":"thinking_delta","thinking":"hmm"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":'
        b'{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":'
        b'{"type":"text_delta","text":"Answer"}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},'
        b'"usage":{"output_tokens":42}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    with FakeAnthropic() as fake:
        fake.script([Reply(raw_body=raw)])
        events, err = send(CASE, fake, request("claude-sonnet-4-5"))
    assert err is None and text_of(events) == "Answer"
    assert events[-2].input_tokens == 105 and events[-2].output_tokens == 42
    assert events[-1] == Stop(reason="max_tokens")


def test_stream_without_message_stop_is_an_error() -> None:
    """A stream that ends cleanly but without message_stop is a retryable failure, not a short answer."""
    raw = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":1}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        b'{"type":"text_delta","text":"cut"}}\n\n'
    )
    with FakeAnthropic() as fake:
        fake.script([Reply(raw_body=raw)])
        events, err = send(CASE, fake, request("claude-sonnet-4-5"))
    assert text_of(events) == "cut" and err is not None and err.kind == "retryable"


def test_credit_error_in_stream_and_oauth_bearer() -> None:
    """A billing error is kind credit; an OAuth credential (openanalyst) is sent as a Bearer token."""
    with FakeAnthropic() as fake:
        fake.script([Reply.stream_error("credit")])
        cred = ProviderCredential("openanalyst", KEY, fake.base_url, "api", {"auth_method": "oauth"})

        async def go(client):  # type: ignore[no-untyped-def]
            return await drain(make_adapter("openanalyst", client, cred).stream(request("claude-sonnet-4-5")))

        _, err = run(go)
        headers = fake.requests[0].headers
    assert err is not None and err.kind == "credit" and err.provider == "openanalyst"
    assert headers["authorization"] == f"Bearer {KEY}" and "x-api-key" not in headers


def test_low_credit_balance_is_credit_in_stream_and_as_http_400() -> None:
    """Anthropic's 'credit balance is too low' (an invalid_request_error) means credit, not a bad request."""
    message = "Your credit balance is too low to access the Anthropic API."
    raw = (
        b'event: error\ndata: {"type":"error","error":{"type":"invalid_request_error","message":"'
        + message.encode()
        + b'"}}\n\n'
    )
    with FakeAnthropic() as fake:
        fake.script([Reply(raw_body=raw), Reply.http_error(400, "bad_request", message=message)])
        _, in_stream = send(CASE, fake, request("claude-sonnet-4-5"))
        _, as_http = send(CASE, fake, request("claude-sonnet-4-5"))
    assert in_stream is not None and in_stream.kind == "credit"
    assert as_http is not None and as_http.kind == "credit" and as_http.status == 400


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-3-5-haiku-20241022", None),  # no extended thinking: the field would be a 400
        ("claude-opus-4-1-20250805", (30976, 32000)),  # the budget fits under a 32k output cap
        ("claude-sonnet-4-5", (32000, 40192)),
    ],
)
def test_thinking_only_where_the_model_supports_it(model: str, expected: tuple[int, int] | None) -> None:
    """effort=max asks for thinking only on models that have it, within the model's output limit."""
    with FakeAnthropic() as fake:
        fake.script([Reply.text("ok")])
        send(CASE, fake, request(model, effort="max", max_tokens=8192))
        body = fake.requests[0].json()
    got = (body["thinking"]["budget_tokens"], body["max_tokens"]) if "thinking" in body else None
    assert got == expected


def test_text_delta_fast_path_matches_full_parse() -> None:
    """Compact and spaced text deltas, escapes, unicode and a text ending in '"}}' all decode exactly."""
    texts = ["plain", 'quote " and \\ backslash', "tab\tnewline\n", "ünïcødé ✓ \U0001f600", 'ends with "}}', ""]
    events = []
    for i, text in enumerate(texts):
        delta = {"type": "content_block_delta", "index": i % 3, "delta": {"type": "text_delta", "text": text}}
        compact = json.dumps(delta, separators=(",", ":"), ensure_ascii=i % 2 == 0)
        spaced = json.dumps(delta)
        events += [compact, spaced]
    raw = b"".join(f"event: content_block_delta\ndata: {e}\n\n".encode() for e in events) + (
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    with FakeAnthropic() as fake:
        fake.script([Reply(raw_body=raw)])
        got, err = send(CASE, fake, request("claude-sonnet-4-5"))
    assert err is None
    assert text_of(got) == "".join(t + t for t in texts)
