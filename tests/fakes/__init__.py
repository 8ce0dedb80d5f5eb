"""Fake LLM provider servers (real HTTP on 127.0.0.1, one per wire format), scriptable per request.

with FakeAnthropic() as fake:
    fake.script([Reply.tool_call("bash", {"command": "ls"}), Reply.text("done")])
    ... ANTHROPIC_BASE_URL=fake.base_url ...
    assert fake.requests[1].json()["messages"][-1]["content"][0]["type"] == "tool_result"
"""

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.gemini import FakeGemini
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai import FakeOpenAI
from tests.fakes.reply import Reply, TextPart, ToolPart
from tests.fakes.server import FakeServer, RecordedRequest

__all__ = [
    "FakeAnthropic",
    "FakeBedrock",
    "FakeGemini",
    "FakeOllama",
    "FakeOpenAI",
    "FakeServer",
    "RecordedRequest",
    "Reply",
    "TextPart",
    "ToolPart",
]
