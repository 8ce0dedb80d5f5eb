"""The OpenAI chat-completions adapter's wire request and its stream corner cases."""

from __future__ import annotations

import json

import pytest
from fakes import FakeOpenAI, Reply
from fakes.harness import BASH, CASES, KEY, request, send, text_of, tool_history

CASE = CASES["openai"]


def test_request_shape_with_tools_and_tool_results() -> None:
    """POST {base}/chat/completions with Bearer, include_usage, function tools and role-tool results."""
    with FakeOpenAI() as fake:
        fake.script([Reply.text("ok")])
        events, err = send(CASE, fake, request("gpt-4o", tool_history(), system="Be brief.", max_tokens=900))
        assert err is None and text_of(events) == "ok"
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    body = sent.json()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 900 and "reasoning_effort" not in body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "bash", "description": BASH.description, "parameters": BASH.input_schema},
        }
    ]
    system, question, assistant, tool = body["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert question == {"role": "user", "content": "list files"}
    assert assistant["role"] == "assistant" and assistant["content"] == "Looking."
    (call,) = assistant["tool_calls"]
    assert call["id"] == "toolu_1" and call["type"] == "function" and call["function"]["name"] == "bash"
    assert json.loads(call["function"]["arguments"]) == {"command": "ls"}
    assert tool["role"] == "tool" and tool["tool_call_id"] == "toolu_1" and "ls: denied" in tool["content"]


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("o3", "low", "low"),
        ("o4-mini", "medium", "medium"),
        ("gpt-5", "high", "high"),
        ("gpt-5-mini", "max", "high"),
        ("gpt-4o", "high", None),
        ("grok-4", "high", None),
    ],
)
def test_effort_only_for_reasoning_models(model: str, effort: str, expected: str | None) -> None:
    """reasoning_effort is sent (max→high) only to o-series and gpt-5 models; others ignore effort."""
    with FakeOpenAI() as fake:
        fake.script([Reply.text("ok")])
        send(CASE, fake, request(model, effort=effort, max_tokens=500))
        body = fake.requests[0].json()
    assert body.get("reasoning_effort") == expected
    assert ("max_completion_tokens" in body) == (expected is not None)


def test_quota_429_is_credit_not_retryable() -> None:
    """A 429 whose error code is insufficient_quota means no credit: move on, do not retry."""
    with FakeOpenAI() as fake:
        fake.script([Reply.http_error(429, "credit")])
        _, err = send(CASE, fake, request("gpt-4o"))
    assert err is not None and err.kind == "credit"


def test_gateway_stream_without_done_but_with_finish_reason() -> None:
    """Gateways that end after finish_reason without [DONE] still give a complete answer."""
    raw = (
        b": keep-alive\n\n"
        b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'
    )
    with FakeOpenAI() as fake:
        fake.script([Reply(raw_body=raw)])
        events, err = send(CASE, fake, request("gpt-4o"))
    assert err is None and text_of(events) == "Hi"
    assert (events[-2].input_tokens, events[-2].output_tokens, events[-1].reason) == (3, 4, "max_tokens")


def test_malformed_tool_arguments_are_an_error() -> None:
    """Arguments that do not parse as a JSON object fail the attempt instead of calling a tool with junk."""
    raw = (
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function",'
        b'"function":{"name":"bash","arguments":"{\\"comm"}}]},"finish_reason":null}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    with FakeOpenAI() as fake:
        fake.script([Reply(raw_body=raw)])
        _, err = send(CASE, fake, request("gpt-4o"))
    assert err is not None and err.kind == "retryable" and "bash" in err.message


def test_a_tool_call_without_an_id_gets_one_that_never_repeats() -> None:
    """A gateway that sends no tool-call id: the adapter makes one, different in every answer (an index such as
    ``call_0`` would repeat, and approvals and audit records are matched by call id)."""
    from server.providers.openai_chat import OpenAIChatAdapter, _Parser
    from server.providers.types import ToolCall

    chunk = {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "bash",
                                                                                 "arguments": '{"command": "ls"}'}}]},
                          "finish_reason": "tool_calls"}]}
    ids = []
    for _ in range(2):
        parser = _Parser(OpenAIChatAdapter.__new__(OpenAIChatAdapter))
        (call,) = [e for e in parser.feed(("", json.dumps(chunk))) if isinstance(e, ToolCall)]
        assert (call.name, call.arguments) == ("bash", {"command": "ls"})
        ids.append(call.id)
    assert ids[0] != ids[1] and all(i.startswith("call_") and len(i) > len("call_0") for i in ids)
