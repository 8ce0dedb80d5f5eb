"""Test helpers shared by the provider tests: one table of the five wire formats (fake class, provider
name, a model it serves, its credential), and small functions to build requests and drain a stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from server.providers.base import HttpAdapter, Timeouts
from server.providers.credentials import ProviderCredential
from server.providers.registry import make_adapter
from server.providers.types import (
    ChatRequest,
    Message,
    ProviderError,
    TextBlock,
    TextDelta,
    ToolCall,
    ToolSpec,
)

from .anthropic import FakeAnthropic
from .bedrock import FakeBedrock
from .gemini import FakeGemini
from .ollama import FakeOllama
from .openai import FakeOpenAI
from .server import FakeServer

T = TypeVar("T")
KEY = "sk-test-SECRETKEY-0123456789"
BASH = ToolSpec(
    name="bash",
    description="Run a shell command.",
    input_schema={
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
        "additionalProperties": False,
    },
)


@dataclass(frozen=True)
class WireCase:
    provider: str
    fake: type[FakeServer]
    model: str

    def base_url(self, fake: FakeServer) -> str:
        return fake.base_url + ("/v1" if self.provider == "openai" else "")

    def credential(
        self,
        fake: FakeServer | None,
        key: str = KEY,
        provider: str | None = None,
        base_url: str | None = None,
    ) -> ProviderCredential:
        extra: dict[str, Any] = {}
        if self.provider == "bedrock":
            extra = {"auth": "sigv4", "access_key_id": "AKIDEXAMPLE", "region": "us-east-1"}
        url = base_url or (self.base_url(fake) if fake is not None else None)
        return ProviderCredential(provider or self.provider, key, url, "api", extra)


CASES = {
    c.provider: c
    for c in (
        WireCase("anthropic", FakeAnthropic, "claude-sonnet-4-5"),
        WireCase("openai", FakeOpenAI, "gpt-4o"),
        WireCase("gemini", FakeGemini, "gemini-2.5-flash"),
        WireCase("ollama", FakeOllama, "llama3.2"),
        WireCase("bedrock", FakeBedrock, "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    )
}


def user(text: str) -> Message:
    return Message(role="user", blocks=[TextBlock(text=text)])


def request(model: str, messages: list[Message] | None = None, **kw: Any) -> ChatRequest:
    kw.setdefault("tools", [BASH])
    return ChatRequest(model=model, messages=messages or [user("hello")], **kw)


def run(fn: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    """Run ``fn(client)`` on a fresh event loop with a fresh shared client."""

    async def main() -> T:
        async with httpx.AsyncClient() as client:
            return await fn(client)

    return asyncio.run(main())


async def drain(stream: AsyncIterator[Any]) -> tuple[list[Any], ProviderError | None]:
    events: list[Any] = []
    try:
        async for event in stream:
            events.append(event)
    except ProviderError as err:
        return events, err
    return events, None


def adapter(
    case: WireCase,
    fake: FakeServer,
    client: httpx.AsyncClient,
    *,
    key: str = KEY,
    timeouts: Timeouts | None = None,
) -> HttpAdapter:
    return make_adapter(case.provider, client, case.credential(fake, key), timeouts)


def text_of(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def calls_of(events: list[Any]) -> list[ToolCall]:
    return [e for e in events if isinstance(e, ToolCall)]


def tool_history() -> list[Message]:
    """A user question, an assistant tool call, and its (failed) tool result: what turn two sends."""
    from server.providers.types import ToolResultBlock, ToolUseBlock

    return [
        user("list files"),
        Message(
            role="assistant",
            blocks=[
                TextBlock(text="Looking."),
                ToolUseBlock(id="toolu_1", name="bash", input={"command": "ls"}),
            ],
        ),
        Message(role="user", blocks=[ToolResultBlock(tool_use_id="toolu_1", content="ls: denied", is_error=True)]),
    ]


def send(case: WireCase, fake: FakeServer, req: ChatRequest) -> tuple[list[Any], ProviderError | None]:
    """Stream ``req`` through the case's adapter against ``fake``."""

    async def go(client: httpx.AsyncClient) -> tuple[list[Any], ProviderError | None]:
        return await drain(adapter(case, fake, client).stream(req))

    return run(go)
