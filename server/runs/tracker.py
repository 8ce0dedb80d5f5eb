"""What a run learns from its session's events while its turn runs: usage, cost, the answer, a fatal error,
the end (``state: idle`` of the top-level turn). Fed by ``EventLog.on_append`` — synchronous, no I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from server.sessions.events import Event


@dataclass
class Tracker:
    max_cost_usd: float | None
    on_over_budget: Callable[[], None]
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    turns: int = 0
    answer: str | None = None
    error: tuple[str, str] | None = None
    over_budget: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def observe(self, event: Event) -> None:
        data = event.data
        if event.type == "usage":
            self.input_tokens += int(data.get("input_tokens", 0))
            self.output_tokens += int(data.get("output_tokens", 0))
            self.cost_usd += float(data.get("cost_usd", 0.0))
            if "parent_tool_call_id" not in data:
                self.turns += 1
            if self.max_cost_usd is not None and self.cost_usd > self.max_cost_usd and not self.over_budget:
                self.over_budget = True
                self.on_over_budget()
        elif event.type == "message" and data.get("role") == "assistant" and "parent_tool_call_id" not in data:
            text = "".join(b.get("text", "") for b in data.get("content", []) if b.get("type") == "text")
            if text:
                self.answer = text
        elif event.type == "error" and data.get("fatal", True) and "parent_tool_call_id" not in data:
            self.error = (str(data.get("code")), str(data.get("message")))
        elif event.type == "state" and data.get("state") == "idle" and "parent_tool_call_id" not in data:
            self.done.set()
