"""The Ollama adapter's wire request (native /api/chat) and its NDJSON stream corner cases."""

from __future__ import annotations

from fakes import FakeOllama, Reply
from fakes.harness import CASES, request, send, text_of, tool_history

CASE = CASES["ollama"]


def test_request_shape_with_tools_and_tool_results() -> None:
    """POST /api/chat, stream, num_predict, function tools, object arguments, role-tool results by name."""
    with FakeOllama() as fake:
        fake.script([Reply.text("ok")])
        events, err = send(
            CASE, fake, request("llama3.2", tool_history(), system="Be brief.", max_tokens=300)
        )
        assert err is None and text_of(events) == "ok"
        (sent,) = fake.requests
    assert sent.path == "/api/chat"
    body = sent.json()
    assert body["stream"] is True and body["options"] == {"num_predict": 300} and "think" not in body
    assert body["tools"][0]["function"]["name"] == "bash"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [{"function": {"name": "bash", "arguments": {"command": "ls"}}}],
        },
        {"role": "tool", "tool_name": "bash", "content": "[error] ls: denied"},
    ]


def test_think_only_for_thinking_models() -> None:
    """effort turns on think for models that support it and is omitted for the rest."""
    with FakeOllama() as fake:
        fake.script([Reply.text("a"), Reply.text("b"), Reply.text("c")])
        send(CASE, fake, request("qwen3:8b", effort="low"))
        send(CASE, fake, request("gpt-oss:20b", effort="max"))
        send(CASE, fake, request("llama3.2", effort="high"))
        thinks = [r.json().get("think") for r in fake.requests]
    assert thinks == [True, "high", None]


def test_synthesized_tool_ids_are_unique() -> None:
    """Ollama sends no tool call ids; each call gets its own."""
    with FakeOllama() as fake:
        fake.script([Reply.tool_calls(("bash", {"command": "a"}), ("bash", {"command": "b"}))])
        events, _ = send(CASE, fake, request("llama3.2"))
    ids = [e.id for e in events if hasattr(e, "arguments")]
    assert len(ids) == 2 and len(set(ids)) == 2 and all(ids)
