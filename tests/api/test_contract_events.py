"""The typed event contract (``server.contract.events``): what an emitter can and cannot send, and the bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from server.contract.events import (
    ErrorEvent,
    MessageEvent,
    SessionEvent,
    StateEvent,
    ToolCallEvent,
    ToolResultEvent,
    UsageEvent,
    encode,
    event_data,
)
from server.providers.types import TextBlock
from server.tools.context import ToolContext
from toolrunner.results import error_result


def test_unknown_or_missing_field_is_refused() -> None:
    """An event with an unknown key or without a required one cannot be built, so it cannot be emitted."""
    with pytest.raises(ValidationError):
        StateEvent(state="idle", extra=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        StateEvent(state="sleeping")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        UsageEvent(input_tokens=1, output_tokens=2, cost_usd=0.0)  # type: ignore[call-arg]


def test_tool_events_carry_call_id_and_the_deprecated_id() -> None:
    """tool_call and tool_result name the call ``call_id``; ``id`` is still sent, equal, for one release."""
    call = event_data(ToolCallEvent(call_id="c1", tool_name="bash", arguments={"command": "true"}))
    assert call == {"call_id": "c1", "id": "c1", "tool_name": "bash", "arguments": {"command": "true"}}
    result = event_data(ToolResultEvent.of("c1", error_result("bash", "SANDBOX_DIED", "gone")))
    assert result["call_id"] == result["id"] == "c1"
    assert result["error"] == {"code": "SANDBOX_DIED", "message": "gone"}


def test_host_made_error_code_survives() -> None:
    """A code the host made (outside the runner's fixed set) is not turned into INTERNAL on the way out."""
    result = event_data(ToolResultEvent.of("c2", error_result("bash", "TOO_MANY_CALLS", "busy")))
    assert result["error"]["code"] == "TOO_MANY_CALLS"


def test_optional_fields_only_when_set() -> None:
    """Situational fields are absent when unset; nullable ones that are always meaningful are sent as null."""
    assert event_data(StateEvent(state="idle")) == {"state": "idle"}
    assert event_data(StateEvent(state="idle", interrupted=True)) == {"state": "idle", "interrupted": True}
    assert event_data(ErrorEvent(code="X", message="m", status=500)) == {
        "code": "X", "message": "m", "status": 500, "fatal": True}
    usage = event_data(UsageEvent(input_tokens=1, output_tokens=1, cost_usd=0, provider=None, model=None,
                                  latency_ms=1))
    assert usage["provider"] is None and "provider" in usage
    message = event_data(MessageEvent(role="user", content=[TextBlock(text="hi")]))
    assert message == {"role": "user", "content": [{"type": "text", "text": "hi"}]}


def test_frame_is_event_line_and_one_data_line() -> None:
    """The type travels as the ``event:`` line, the seq as ``id:``, the rest as one JSON ``data:`` line."""
    frame = encode(MessageEvent(id="m1", role="assistant", content=[TextBlock(text="a\nb")]), 7).decode()
    head, data = frame.rstrip("\n").rsplit("\n", 1)
    assert head == "event: message\nid: 7" and frame.endswith("\n\n")
    assert json.loads(data.removeprefix("data: ")) == {"id": "m1", "role": "assistant",
                                                        "content": [{"type": "text", "text": "a\nb"}]}


def test_wire_data_validates_back_into_the_union() -> None:
    """Each encoded event, with its ``event:`` name as ``type``, is a valid member of the documented union."""
    adapter: TypeAdapter[Any] = TypeAdapter(SessionEvent)
    events = [StateEvent(state="thinking"), ToolCallEvent(call_id="c", tool_name="t", arguments={}),
              ErrorEvent(code="INTERRUPTED", message="m", status=200)]
    for event in events:
        data = event_data(event)
        data.pop("id", None)  # the deprecated alias is computed, not accepted on input
        assert adapter.validate_python({"type": event.type, **data}) == event


class _Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def emit(self, event: Any) -> None:
        self.events.append(event)


@pytest.mark.anyio
async def test_sub_agent_events_name_their_parent_call() -> None:
    """Events emitted in a sub-agent's context carry ``parent_tool_call_id``; the parent's do not."""
    sink = _Recorder()
    parent = ToolContext(tenant_id="t", session_id="s", sink=sink)
    await parent.emit(StateEvent(state="thinking"))
    await parent.child("call_9").emit(StateEvent(state="thinking", agent="look around"))
    assert [event_data(e) for e in sink.events] == [
        {"state": "thinking"},
        {"state": "thinking", "agent": "look around", "parent_tool_call_id": "call_9"}]


def test_every_event_model_is_in_a_documented_union() -> None:
    """No event model can be emitted without being documented: every member of AnyEvent is in one of the
    unions the OpenAPI document exports, under the name its ``type`` defaults to."""
    from typing import get_args

    from server.contract.events import AnyEvent, ToolStreamEvent, TurnEvent, event_name, members
    from server.contract.openapi import EVENT_UNIONS

    documented = {m for union in EVENT_UNIONS.values() for m in members(union)}
    assert documented == set(get_args(AnyEvent))
    assert set(members(TurnEvent)) <= set(members(SessionEvent))
    names = [event_name(m) for m in get_args(AnyEvent)]
    assert len(names) == len(set(names)) and "tool_output" in {event_name(m) for m in members(ToolStreamEvent)}
