"""Fake LLM provider servers (real HTTP on 127.0.0.1, one per wire format), scriptable per request.

with FakeAnthropic() as fake:
    fake.script([Reply.tool_call("bash", {"command": "ls"}), Reply.text("done")])
    ... ANTHROPIC_BASE_URL=fake.base_url ...
    assert fake.requests[1].json()["messages"][-1]["content"][0]["type"] == "tool_result"
"""

from .anthropic import FakeAnthropic
from .bedrock import FakeBedrock
from .gemini import FakeGemini
from .ollama import FakeOllama
from .openai import FakeOpenAI
from .reply import Reply, TextPart, ToolPart
from .server import FakeServer, RecordedRequest

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
