"""A session event's JSON is encoded once (``server.sessions.events``) and framed with ``frame_of``: the frame must
be byte for byte what ``encode_frame`` makes from the data, and the stored row the same JSON."""

from __future__ import annotations

import json

from server.contract.events import encode_frame, frame_of
from server.streaming.buffer import dumps_json


def test_a_frame_from_the_stored_json_is_the_frame_from_the_data() -> None:
    data = {"call_id": "call_x", "output": "ünïcode \u2028 line\nbreak \"quoted\" \x00", "n": [1, 2.5, None],
            "nested": {"a": True}}
    text = dumps_json(data)
    assert frame_of("tool_result", text, 7) == encode_frame("tool_result", data, 7)
    assert frame_of("tool_result", text) == encode_frame("tool_result", data)
    assert json.loads(text) == data
