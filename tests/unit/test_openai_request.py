"""OpenAI's request body to our ChatRequest (server.openai_compat.request)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from server.openai_compat.request import CompletionBody, to_chat_request
from server.providers.types import TextBlock, ToolResultBlock, ToolUseBlock


def request(**body: Any) -> Any:
    return to_chat_request(CompletionBody.model_validate({"model": "gpt-4o", **body}), max_output_tokens=1000)


def test_roles_map_to_system_blocks_and_merged_turns() -> None:
    """System and developer text is the system prompt; an assistant tool call and the tool's answer become a
    tool_use block and a tool_result in the next user turn, merged with the user's following text."""
    chat = request(messages=[
        {"role": "system", "content": "Be brief."}, {"role": "developer", "content": [{"type": "text", "text": "No"
                                                                                        " lists."}]},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        {"role": "user", "content": "and tomorrow?"}])
    assert chat.system == "Be brief.\n\nNo lists." and chat.model == "gpt-4o"
    assert [m.role for m in chat.messages] == ["user", "assistant", "user"]
    assert chat.messages[1].blocks == [ToolUseBlock(id="c1", name="w", input={"city": "Oslo"})]
    assert chat.messages[2].blocks == [ToolResultBlock(tool_use_id="c1", content="rain"),
                                       TextBlock(text="and tomorrow?")]


def test_lenient_where_openai_is() -> None:
    """A system-only conversation is sent as the user's message; arguments that are not a JSON object are kept
    as a string; 'default' means each provider's default; the output limit is capped; minimal effort is low."""
    chat = request(model="default", messages=[{"role": "system", "content": "Say hi."}], max_tokens=10**9,
                   reasoning_effort="minimal")
    assert chat.model == "" and chat.system is None and chat.messages[0].blocks == [TextBlock(text="Say hi.")]
    assert chat.max_tokens == 1000 and chat.effort == "low"
    odd = request(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}])
    assert odd.messages[1].blocks == [ToolUseBlock(id="c2", name="f", input={"raw_arguments": "not json"})]


@pytest.mark.parametrize("messages", [
    [], [{"role": "tool", "content": "x"}], [{"role": "user", "content": [{"type": "image_url"}]}],
    [{"role": "narrator", "content": "x"}]])
def test_what_cannot_be_honoured_is_refused_by_the_schema(messages: list[Any]) -> None:
    """No messages, a tool message without its call id, non-text parts, unknown roles: validation errors."""
    with pytest.raises(ValidationError):
        CompletionBody.model_validate({"model": "m", "messages": messages})
    with pytest.raises(ValidationError):
        CompletionBody.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2})
