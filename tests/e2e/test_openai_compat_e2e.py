"""The OpenAI-compatible endpoint as an OpenAI SDK user meets it: the official ``openai`` package, only its
base URL changed, against ``openanalyst --serve`` with a fake Anthropic (and a fake OpenAI) upstream."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from agent_support import server_env
from fakes.anthropic import FakeAnthropic
from fakes.openai import FakeOpenAI
from fakes.reply import Reply

from server.openai_compat.contract import ChatCompletion, ChatCompletionChunk, ModelList

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def fakes() -> Iterator[tuple[FakeAnthropic, FakeOpenAI]]:
    with FakeAnthropic() as anthropic, FakeOpenAI() as upstream_openai:
        yield anthropic, upstream_openai


def start(serve: Callable[..., Any], tmp_path: Path, anthropic: FakeAnthropic, **extra: str) -> Any:
    env = server_env(anthropic.base_url, tmp_path / "owner-ws", OPENANALYST_PROVIDER_MAX_RETRIES="0", **extra)
    (tmp_path / "owner-ws").mkdir(exist_ok=True)
    return serve(env=env)


@pytest.fixture
def server(serve: Callable[..., Any], fakes: tuple[FakeAnthropic, FakeOpenAI], tmp_path: Path) -> Any:
    return start(serve, tmp_path, fakes[0])


def sdk(server: Any, **kwargs: Any) -> openai.OpenAI:
    """The official client, pointed at our server; no retries, so each test sees the first answer."""
    return openai.OpenAI(base_url=server.base + "/v1", api_key=kwargs.pop("api_key", "unused"), max_retries=0,
                         timeout=30, **kwargs)


def test_completion_with_usage(server: Any, fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    """A non-streamed completion: the provider's text, finish_reason stop, usage in OpenAI's names, and the
    system message passed on as the provider's system prompt."""
    anthropic, _ = fakes
    anthropic.script([Reply.text("Forty-two, of course.", usage=(31, 9))])
    answer = sdk(server).chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "The answer?"}])
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.choices[0].message.content == "Forty-two, of course."
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (31, 9, 40)
    assert answer.model == "claude-sonnet-4-5"
    sent = anthropic.requests[-1].json()
    assert sent["system"] == "Answer briefly."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "The answer?"}]}]
    assert "tools" not in sent or sent["tools"] == []  # a plain completion: none of the server's tools
    anthropic.script([Reply.text("raw")])
    raw = httpx.post(server.base + "/v1/chat/completions", timeout=30,
                     json={"model": "default", "messages": [{"role": "user", "content": "hi"}]}).json()
    assert ChatCompletion.model_validate(raw).choices[0].message.content == "raw"
    assert "tool_calls" not in raw["choices"][0]["message"]  # OpenAI leaves it out when there are none


def test_stream_with_usage(server: Any, fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    """Streaming with stream_options.include_usage: content deltas that add up to the answer, a finish chunk,
    then one chunk with no choices carrying usage, and the stream ends at data: [DONE]."""
    anthropic, _ = fakes
    # Spaced events, so that each delta reaches the server on its own (read together they are one delta).
    anthropic.script([dataclasses.replace(Reply.text("Streamed in several pieces.", chunk=5, usage=(20, 6)),
                                          event_delay=0.02)])
    stream = sdk(server).chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "stream it"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streamed in several pieces."
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 5
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (20, 6, 26)
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_ends_with_done(server: Any, fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    """Without include_usage no chunk carries usage; on the wire the last line is data: [DONE]."""
    anthropic, _ = fakes
    anthropic.script([Reply.text("plain stream")])
    with httpx.stream("POST", server.base + "/v1/chat/completions", timeout=30,
                      json={"model": "claude-sonnet-4-5", "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all("usage" not in c for c in chunks)
    for chunk in chunks:  # what is sent is what the OpenAPI document says
        ChatCompletionChunk.model_validate(chunk)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "plain stream"


def test_client_side_tools_round_trip(server: Any, fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    """The client's own function tools reach the provider; its tool call comes back as OpenAI tool_calls
    (finish_reason tool_calls), and the client's tool message goes back to the provider as a tool result."""
    anthropic, _ = fakes
    anthropic.script([Reply.tool_call("get_weather", {"city": "Paris"}, id="toolu_w1"),
                      Reply.text("It is sunny in Paris.")])
    client = sdk(server)
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="claude-sonnet-4-5", messages=messages, tools=tools)
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls or []
    assert call.id == "toolu_w1" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert anthropic.requests[-1].json()["tools"][0]["name"] == "get_weather"
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}]
    second = client.chat.completions.create(model="claude-sonnet-4-5", messages=messages, tools=tools)
    assert second.choices[0].message.content == "It is sunny in Paris."
    sent = anthropic.requests[-1].json()["messages"]
    assert sent[1]["content"][0] == {"type": "tool_use", "id": "toolu_w1", "name": "get_weather",
                                     "input": {"city": "Paris"}}
    assert sent[2]["content"][0]["type"] == "tool_result" and sent[2]["content"][0]["tool_use_id"] == "toolu_w1"


def test_errors_reach_the_sdk_as_its_typed_errors(server: Any, fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    """Errors are our one shape, and the SDK finds message and code in it: an invalid body is our 422
    (UnprocessableEntityError), a provider refusing the request a 400 with our code, streaming or not."""
    anthropic, _ = fakes
    client = sdk(server)
    for bad in ({"messages": []}, {"messages": [{"role": "user", "content": "hi"}], "n": 2},
                {"messages": [{"role": "tool", "content": "no call id"}]},
                {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}):
        with pytest.raises(openai.UnprocessableEntityError) as invalid:
            client.chat.completions.create(model="claude-sonnet-4-5", **bad)
        assert invalid.value.status_code == 422 and invalid.value.code == "VALIDATION_ERROR"
        body = invalid.value.body
        assert isinstance(body, dict) and set(body) == {"code", "message", "status"} and body["status"] == 422
        assert body["message"] in invalid.value.message  # the SDK's message is ours, prefixed with the status
    assert "messages.0" in invalid.value.message
    anthropic.script([Reply.http_error(400, "bad_request"), Reply.http_error(400, "bad_request")])
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="claude-sonnet-4-5", stream=stream,
                                           messages=[{"role": "user", "content": "hi"}])
        assert refused.value.code == "PROVIDER_ERROR"


def test_failure_mid_stream_is_an_sdk_error(server: Any, fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    """A provider failing after part of the answer was streamed cannot be hidden: the stream ends with an
    error line, which the SDK raises as APIError after the text it already gave."""
    anthropic, _ = fakes
    anthropic.script([Reply.stream_error("overloaded", after_text="Half an ans")])
    stream = sdk(server).chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "go"}], stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError) as failed:
        for chunk in stream:
            if chunk.choices:
                seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen).startswith("Half")
    assert isinstance(failed.value.body, dict) and failed.value.body["code"] == "PROVIDER_FAILED_MID_ANSWER"


def test_models_listing(serve: Callable[..., Any], fakes: tuple[FakeAnthropic, FakeOpenAI],
                        tmp_path: Path) -> None:
    """GET /v1/models lists 'default' and each configured provider's default model, owned by the provider;
    one can be retrieved, an unknown one is the SDK's NotFoundError."""
    anthropic, upstream = fakes
    server = start(serve, tmp_path, anthropic, OPENAI_API_KEY="sk-openai-test-000",
                   OPENAI_BASE_URL=upstream.v1)
    client = sdk(server)
    models = {m.id: m.owned_by for m in client.models.list()}
    ModelList.model_validate(httpx.get(server.base + "/v1/models", timeout=30).json())
    assert models == {"default": "openanalyst", "claude-sonnet-4-5": "anthropic", "gpt-4o": "openai"}
    assert client.models.retrieve("gpt-4o").owned_by == "openai"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "MODEL_NOT_FOUND"
    upstream.script([Reply.text("from the OpenAI upstream")])
    answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "from the OpenAI upstream" and answer.model == "gpt-4o"


def test_api_key_and_tenant_through_the_sdk(serve: Callable[..., Any], fakes: tuple[FakeAnthropic, FakeOpenAI],
                                            tmp_path: Path, openanalyst_cmd: list[str]) -> None:
    """With API keys required, the SDK's api_key is the bearer key (a wrong one is AuthenticationError), and
    default_headers' X-Tenant-ID picks the tenant: a tenant without providers of its own gets 503
    NO_PROVIDER_CONFIGURED while the owner is answered."""
    anthropic, _ = fakes
    server = start(serve, tmp_path, anthropic, OPENANALYST_REQUIRE_API_KEY="true",
                   OPENANALYST_SHARE_ENV_PROVIDERS_WITH_TENANTS="false")
    made = subprocess.run([*openanalyst_cmd, "--data-dir", str(server.data_dir), "keys", "create"],
                          capture_output=True, text=True, timeout=30, check=True)
    key = made.stdout.strip()
    with pytest.raises(openai.AuthenticationError) as wrong:
        sdk(server, api_key="oak_nope_nope").models.list()
    assert wrong.value.code == "INVALID_API_KEY"
    anthropic.script([Reply.text("owner answered")])
    owner = sdk(server, api_key=key).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hi"}])
    assert owner.choices[0].message.content == "owner answered"
    tenant = sdk(server, api_key=key, default_headers={"X-Tenant-ID": "acme"})
    with pytest.raises(openai.InternalServerError) as none:
        tenant.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
    assert none.value.status_code == 503 and none.value.code == "NO_PROVIDER_CONFIGURED"
    assert [m.id for m in tenant.models.list()] == ["default"]


def test_client_gone_mid_stream_ends_the_answer(server: Any, fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    """A client that goes away after the first delta ends the server's stream long before the provider would
    have finished (10 s of deltas), and the next request is answered normally."""
    anthropic, _ = fakes
    slow = dataclasses.replace(Reply.text("x" * 800, chunk=4), event_delay=0.05)
    anthropic.script([slow, Reply.text("after the disconnect")])
    body = {"model": "claude-sonnet-4-5", "stream": True, "messages": [{"role": "user", "content": "long"}]}
    began = time.monotonic()
    with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if '"content":"x' in line:
                break
    route = 'openanalyst_sse_streams_open{route="/v1/chat/completions"}'
    deadline = time.monotonic() + 4
    while f"{route} 0.0" not in httpx.get(server.base + "/metrics", timeout=10).text:
        assert time.monotonic() < deadline, "the stream outlived its client"
        time.sleep(0.05)  # poll interval against the deadline
    assert time.monotonic() - began < 8
    answer = sdk(server).chat.completions.create(model="claude-sonnet-4-5",
                                                 messages=[{"role": "user", "content": "again"}])
    assert answer.choices[0].message.content == "after the disconnect"
