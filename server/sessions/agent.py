"""The agent loop: the conversation goes to a provider with the tool list, text streams out, tool calls run
(concurrently, results kept in order) and are fed back, until the model answers without tools or the turn
limit is reached.

The loop does not know where its events go or where messages are stored: a session persists both, a quick
chat keeps them in memory. It never commits text to the client before the router has a provider producing
content; if a provider fails after streaming, the router says `Discarded` and the partial text is dropped
from the message (the client is told), so the stored message holds no duplicated or lost text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.contract.events import (
    AssistantDeltaEvent,
    ErrorEvent,
    MessageEvent,
    ProviderFailure,
    StateEvent,
    ToolResultEvent,
    UsageEvent,
)
from server.errors import ApiError
from server.providers.failover import AllProvidersFailed, ModelNotServed, NoProviderConfigured, ProviderRouter
from server.providers.pricing import PriceTable
from server.providers.types import (
    Attempt,
    ChatRequest,
    Discarded,
    Effort,
    Message,
    ProviderError,
    TextBlock,
    TextDelta,
    ToolCall,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
)
from server.tools.context import ToolContext
from server.tools.dispatch import REFUSED_BEFORE_RUNNING, ToolDispatcher
from toolrunner.results import ToolResult, error_result

log = logging.getLogger(__name__)

TOOL_RESULT_CHARS_TO_MODEL = 100_000
INTERRUPTED = "the call was interrupted by the user"
ERROR_STATUS = {"NO_PROVIDER_CONFIGURED": 503, "MODEL_NOT_AVAILABLE": 400, "ALL_PROVIDERS_FAILED": 502,
                "PROVIDER_ERROR": 502, "TURN_LIMIT": 200}


class Conversation(Protocol):
    """Where a turn reads history from and adds messages to."""

    history: list[Message]

    async def add(self, message: Message) -> str | None:
        """Append to the history (and store it, where stored); returns the stored message's id."""


@dataclass
class MemoryConversation:
    history: list[Message] = field(default_factory=list)

    async def add(self, message: Message) -> str | None:
        self.history.append(message)
        return None


@dataclass
class TurnBudget:
    """Model turns left for one message, shared by its sub-agents: ``max_turns`` bounds every model request
    the message causes, not each agent's own (a run's ``max_turns: 1`` meant 1 + 25 per sub-agent)."""

    left: int

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@dataclass
class TurnOptions:
    model: str | None = None
    system_prompt: str | None = None
    effort: Effort | None = None
    max_turns: int = 25
    max_tokens: int | None = None  # None: the server's max_output_tokens
    output_schema: dict[str, Any] | None = None
    budget: TurnBudget | None = None  # set by the message's first loop, shared with its sub-agents


@dataclass
class TurnOutcome:
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    provider: str | None = None
    model: str | None = None
    error: dict[str, Any] | None = None
    structured_output: dict[str, Any] | None = None

    def usage(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cost_usd": round(self.cost_usd, 6), "provider": self.provider, "model": self.model}


def alternating(history: list[Message]) -> list[Message]:
    """Consecutive messages of one role merged (an interrupted turn leaves tool results right before the next
    user text); providers require user and assistant turns to alternate."""
    merged: list[Message] = []
    for message in history:
        if merged and merged[-1].role == message.role:
            merged[-1] = Message(role=message.role, blocks=[*merged[-1].blocks, *message.blocks])
        else:
            merged.append(message)
    return merged


def blocks_to_json(message: Message) -> list[dict[str, Any]]:
    return [b.model_dump() for b in message.blocks]


def _result_for_model(result: ToolResult) -> tuple[str, bool]:
    text = result.output
    if len(text) > TOOL_RESULT_CHARS_TO_MODEL:
        text = text[:TOOL_RESULT_CHARS_TO_MODEL] + "\n[output cut for the model]"
    notes = []
    if result.exit_code not in (0, None):
        notes.append(f"exit code {result.exit_code}")
    if result.limit:
        notes.append(f"stopped by limit: {result.limit}")
    if result.truncated:
        notes.append("output truncated")
    if result.error is not None:
        notes.append(f"error {result.error.code}: {result.error.message}")
    if notes:
        text = f"{text}\n[{'; '.join(notes)}]" if text else f"[{'; '.join(notes)}]"
    return text, result.error is not None


def _error_event(error: dict[str, Any]) -> ErrorEvent:
    """The ``error`` event of a turn that failed (``TurnOutcome.error``, whose extras are typed here)."""
    providers = error.get("providers")
    return ErrorEvent(code=error["code"], message=error["message"], status=ERROR_STATUS.get(error["code"], 502),
                      provider=error.get("provider"),
                      providers=None if providers is None else [ProviderFailure(**p) for p in providers])


class AgentLoop:
    def __init__(self, router: ProviderRouter, dispatcher: ToolDispatcher, prices: PriceTable | None = None, *,
                 max_output_tokens: int = 8192) -> None:
        self._router = router
        self._dispatcher = dispatcher
        self._prices = prices or PriceTable()
        self.max_output_tokens = max_output_tokens

    def tool_specs(self, ctx: ToolContext) -> list[ToolSpec]:
        specs = []
        for tool in self._dispatcher.registry.all():
            if not self._dispatcher.allowed(ctx.tenant_id, tool.name):
                continue
            if self._dispatcher.registry.unavailable(tool.name, ctx.tenant_id, ctx.skill_scope) is not None:
                continue  # cannot run here (image, backend) or outside the running skill's allowed-tools
            schema = tool.input_schema
            if tool.name == "structured_output":
                if ctx.output_schema is None:
                    continue
                schema = ctx.output_schema
            if tool.name == "agent" and ctx.depth >= 2:
                continue
            specs.append(ToolSpec(name=tool.name, description=tool.description, input_schema=schema))
        return specs

    async def run(self, ctx: ToolContext, conversation: Conversation, options: TurnOptions) -> TurnOutcome:
        """Run model turns until a final answer; events go to `ctx`; always ends with `state: idle`."""
        outcome = TurnOutcome()
        ctx.output_schema = options.output_schema
        ctx.turn = options  # the `config` tool changes it; every model call below reads it again
        if ctx.run_subagent is None:
            ctx.run_subagent = self._subagent_runner(options)
        try:
            await self._loop(ctx, conversation, options, outcome)
        except NoProviderConfigured as exc:
            outcome.error = {"code": "NO_PROVIDER_CONFIGURED", "message": str(exc)}
        except ModelNotServed as exc:
            outcome.error = {"code": exc.code, "message": exc.message}
        except AllProvidersFailed as exc:
            outcome.error = {"code": "ALL_PROVIDERS_FAILED", "message": str(exc),
                             "providers": [{"provider": p, "error": m} for p, m in exc.errors]}
        except ProviderError as exc:
            outcome.error = {"code": "PROVIDER_ERROR", "message": exc.message, "provider": exc.provider}
        except asyncio.CancelledError:
            await asyncio.shield(self._after_interrupt(ctx, conversation))
            raise
        if outcome.error is not None:
            await ctx.emit(_error_event(outcome.error))
        outcome.structured_output = ctx.structured_output
        if ctx.depth == 0:  # a sub-agent's end is its tool_result, not the turn's end
            await ctx.emit(StateEvent(state="idle"))
        return outcome

    async def _loop(self, ctx: ToolContext, conversation: Conversation, options: TurnOptions,
                    outcome: TurnOutcome) -> None:
        tools = self.tool_specs(ctx)
        if options.budget is None:
            options.budget = TurnBudget(options.max_turns)
        while options.budget.take():
            await ctx.emit(StateEvent(state="thinking"))
            request = ChatRequest(model=options.model or "", system=options.system_prompt,
                                  messages=alternating(conversation.history), tools=tools,
                                  effort=options.effort,
                                  max_tokens=options.max_tokens or self.max_output_tokens)
            text, calls = await self._stream_one(ctx, request, outcome)
            blocks: list[Any] = []
            if text:
                blocks.append(TextBlock(text=text))
            stored = [self._dispatcher.storable(c.arguments) for c in calls]
            blocks.extend(ToolUseBlock(id=c.id, name=c.name, input=a) for c, a in zip(calls, stored, strict=True))
            if blocks:
                await self._add_message(ctx, conversation, Message(role="assistant", blocks=blocks))
            outcome.text = text
            if not calls:
                return
            await ctx.emit(StateEvent(state="tool_use"))
            results = await self._run_tools(ctx, calls)
            outcome.tool_calls.extend(
                {"call_id": c.id, "id": c.id, "tool_name": c.name, "arguments": a, "result": r.model_dump()}
                for c, a, r in zip(calls, stored, results, strict=True))
            await self._add_results(ctx, conversation, calls, results)
            if ctx.structured_output is not None:
                return
        outcome.error = {"code": "TURN_LIMIT", "message": f"stopped after {options.max_turns} model turns"}

    async def _stream_one(self, ctx: ToolContext, request: ChatRequest,
                          outcome: TurnOutcome) -> tuple[str, list[ToolCall]]:
        parts: list[str] = []
        calls: list[ToolCall] = []
        usage = Usage(input_tokens=0, output_tokens=0)
        started = time.perf_counter()
        async for event in self._router.stream(ctx.tenant_id, request):
            if isinstance(event, TextDelta):
                parts.append(event.text)
                await ctx.emit(AssistantDeltaEvent(text=event.text))
            elif isinstance(event, ToolCall):
                calls.append(event)
            elif isinstance(event, Usage):
                usage = event
            elif isinstance(event, Attempt):
                outcome.provider, outcome.model = event.provider, event.model
            elif isinstance(event, Discarded):
                dropped = sum(len(p) for p in parts)
                parts.clear()
                calls.clear()
                await ctx.emit(ErrorEvent(code="PARTIAL_RESPONSE_DISCARDED", status=200, fatal=False,
                                          message=f"{event.provider} failed mid-answer ({event.reason}); "
                                                  f"its partial text ({dropped} chars) is discarded and "
                                                  "another provider answers",
                                          provider=event.provider))
        cost = self._prices.cost_usd(outcome.model or request.model, usage)
        outcome.input_tokens += usage.input_tokens
        outcome.output_tokens += usage.output_tokens
        outcome.cost_usd += cost
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        await ctx.emit(UsageEvent(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                                  cost_usd=round(cost, 6), provider=outcome.provider, model=outcome.model,
                                  latency_ms=latency_ms))
        return "".join(parts), calls

    async def _run_tools(self, ctx: ToolContext, calls: list[ToolCall]) -> list[ToolResult]:
        async def one(call: ToolCall) -> ToolResult:
            call_ctx = dataclasses.replace(ctx, call_id=call.id)
            try:
                result = await self._dispatcher.run(call_ctx, call.name, call.arguments, call_id=call.id)
            except ApiError as exc:
                result = error_result(call.name, exc.code, exc.message)
                if exc.code in REFUSED_BEFORE_RUNNING:
                    # Refused (and recorded) before the dispatcher's tool_result event: the stream still shows it.
                    await ctx.emit(ToolResultEvent.of(call.id, result))
            if call_ctx.structured_output is not None:
                ctx.structured_output = call_ctx.structured_output
            return result

        return list(await asyncio.gather(*(one(c) for c in calls)))

    async def _add_results(self, ctx: ToolContext, conversation: Conversation, calls: list[ToolCall],
                           results: list[ToolResult]) -> None:
        blocks: list[Any] = []
        for call, result in zip(calls, results, strict=True):
            content, is_error = _result_for_model(result)
            blocks.append(ToolResultBlock(tool_use_id=call.id, content=content, is_error=is_error))
        await self._add_message(ctx, conversation, Message(role="user", blocks=blocks))

    async def _add_message(self, ctx: ToolContext, conversation: Conversation, message: Message) -> None:
        message_id = await conversation.add(message)
        await ctx.emit(MessageEvent(id=message_id, role=message.role, content=list(message.blocks)))

    async def _after_interrupt(self, ctx: ToolContext, conversation: Conversation) -> None:
        await self._close_interrupted(ctx, conversation)
        await ctx.emit(ErrorEvent(code="INTERRUPTED", message="the turn was interrupted", status=200))
        if ctx.depth == 0:
            await ctx.emit(StateEvent(state="idle", interrupted=True))

    async def _close_interrupted(self, ctx: ToolContext, conversation: Conversation) -> None:
        """Keep the history valid after an interrupt: every tool_use gets a tool_result."""
        if not conversation.history:
            return
        last = conversation.history[-1]
        if last.role != "assistant":
            return
        pending = [b for b in last.blocks if isinstance(b, ToolUseBlock)]
        if not pending:
            return
        blocks: list[Any] = [ToolResultBlock(tool_use_id=b.id, content=INTERRUPTED, is_error=True) for b in pending]
        await self._add_message(ctx, conversation, Message(role="user", blocks=blocks))

    def _subagent_runner(self, options: TurnOptions) -> Callable[[ToolContext, str, str], Awaitable[str]]:
        async def run_subagent(child: ToolContext, description: str, prompt: str) -> str:
            conversation = MemoryConversation([Message(role="user", blocks=[TextBlock(text=prompt)])])
            sub_options = TurnOptions(model=options.model, system_prompt=options.system_prompt,
                                      effort=options.effort, max_turns=options.max_turns,
                                      max_tokens=options.max_tokens, budget=options.budget)
            await child.emit(StateEvent(state="thinking", agent=description))
            outcome = await self.run(child, conversation, sub_options)
            if outcome.error is not None:
                return f"[sub-agent failed: {outcome.error['code']}: {outcome.error['message']}]"
            return outcome.text
        return run_subagent
