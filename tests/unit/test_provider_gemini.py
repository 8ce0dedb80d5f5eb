"""The Gemini adapter's wire request: URL, key header, contents, cleaned tool schemas, thinking budget."""

from __future__ import annotations

from fakes import FakeGemini, Reply
from fakes.harness import CASES, KEY, request, send, text_of, tool_history

from server.providers.gemini import clean_schema

CASE = CASES["gemini"]


def test_request_shape_with_tools_and_function_responses() -> None:
    """streamGenerateContent?alt=sse with x-goog-api-key; functionCall/functionResponse parts by name."""
    with FakeGemini() as fake:
        fake.script([Reply.text("ok")])
        events, err = send(
            CASE, fake, request("gemini-2.5-flash", tool_history(), system="Be brief.", max_tokens=700)
        )
        assert err is None and text_of(events) == "ok"
        (sent,) = fake.requests
    assert sent.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert sent.headers["x-goog-api-key"] == KEY and "key=" not in sent.path
    body = sent.json()
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["generationConfig"] == {"maxOutputTokens": 700}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "list files"}]},
        {
            "role": "model",
            "parts": [{"text": "Looking."}, {"functionCall": {"name": "bash", "args": {"command": "ls"}}}],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "bash", "response": {"error": "ls: denied"}}}],
        },
    ]
    (decl,) = body["tools"][0]["functionDeclarations"]
    assert decl["name"] == "bash"
    assert decl["parameters"] == {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    }


def test_schema_cleaning_is_recursive() -> None:
    """Keys Gemini rejects are removed at every depth; nullable unions and const are rewritten."""
    schema = {
        "$schema": "x",
        "type": "object",
        "additionalProperties": False,
        "$defs": {},
        "properties": {
            "tags": {
                "type": "array",
                "items": {"type": "string", "default": "a", "additionalProperties": False},
            },
            "mode": {"const": "fast"},
            "note": {"type": ["string", "null"]},
        },
    }
    assert clean_schema(schema) == {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}},
            "mode": {"enum": ["fast"]},
            "note": {"type": "string", "nullable": True},
        },
    }


def test_effort_maps_to_thinking_budget_for_thinking_models() -> None:
    """effort becomes generationConfig.thinkingConfig.thinkingBudget on 2.5 models only."""
    with FakeGemini() as fake:
        fake.script([Reply.text("ok"), Reply.text("ok")])
        send(CASE, fake, request("gemini-2.5-pro", effort="medium"))
        send(CASE, fake, request("gemini-2.0-flash", effort="medium"))
        first, second = (r.json()["generationConfig"] for r in fake.requests)
    assert first["thinkingConfig"] == {"thinkingBudget": 4096}
    assert "thinkingConfig" not in second
