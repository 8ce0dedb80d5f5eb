"""The wire protocol module and the host-side result models."""

from __future__ import annotations

import io
import struct

import pytest

from toolrunner.protocol import (
    ERROR_CODES,
    MAX_FRAME,
    RESULT_FIELDS,
    FrameError,
    cut,
    cut_text,
    decode,
    encode,
    frame_length,
    make_result,
    read_frame,
)
from toolrunner.results import ToolError, ToolResult, error_result


def test_frame_round_trip() -> None:
    """A frame is a 4-byte big-endian length then UTF-8 JSON, and reads back as the same object."""
    obj = {"type": "call", "id": 7, "input": {"text": "héllo \u2603"}}
    data = encode(obj)
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    stream = io.BytesIO(data + data)
    assert read_frame(stream) == obj
    assert read_frame(stream) == obj
    assert read_frame(stream) is None


def test_oversized_length_is_corrupt() -> None:
    """A length above MAX_FRAME makes the reader give up instead of allocating it."""
    with pytest.raises(FrameError, match="MAX_FRAME"):
        frame_length(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(FrameError):
        read_frame(io.BytesIO(struct.pack(">I", 0xFFFFFFFF)))


def test_encode_refuses_oversized_frame() -> None:
    """The writer never produces a frame the other side would have to reject."""
    with pytest.raises(FrameError):
        encode({"output": "x" * (MAX_FRAME + 1)})


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe", b'"text"'])
def test_decode_rejects_non_objects(body: bytes) -> None:
    """Only a JSON object is a valid frame body."""
    with pytest.raises(FrameError):
        decode(body)


def test_truncated_frame() -> None:
    """A stream that ends inside a frame is an error, not a short frame."""
    data = encode({"type": "ping", "id": 1})
    with pytest.raises(FrameError, match="inside a frame"):
        read_frame(io.BytesIO(data[:-3]))


def test_cut_keeps_head_and_says_how_much_was_dropped() -> None:
    """Output over the cap keeps its head and names the number of dropped bytes."""
    text, truncated = cut(b"a" * 100, 10)
    assert truncated and text.startswith("a" * 10) and "90 more bytes dropped" in text
    assert cut(b"abc", 10) == ("abc", False)
    text, truncated = cut_text("\u2603" * 10, 4)  # 3 bytes each: never a broken character
    assert truncated and text.startswith("\u2603\n")


def test_make_result_has_exactly_the_contract_fields() -> None:
    """A runner result dict carries the design's fields and validates as a host ToolResult."""
    raw = make_result("bash", "hi", exit_code=0, duration_ms=1.23456, error=("TIMEOUT", "slow"))
    assert tuple(raw) == RESULT_FIELDS
    result = ToolResult.model_validate(raw)
    assert result.error == ToolError(code="TIMEOUT", message="slow")
    assert "TIMEOUT" in ERROR_CODES


def test_unknown_error_code_becomes_internal() -> None:
    """The host never passes on an error code the sandbox invented."""
    raw = make_result("bash", error=("os.system", "x"))
    assert ToolResult.model_validate(raw).error == ToolError(code="INTERNAL", message="x")


def test_extra_fields_are_refused() -> None:
    """A result with fields outside the contract does not validate."""
    raw = {**make_result("bash"), "class": "builtins.Exception"}
    with pytest.raises(ValueError):
        ToolResult.model_validate(raw)


def test_error_result_helper() -> None:
    """The host builds its own error results with the same shape."""
    result = error_result("bash", "SANDBOX_DIED", "gone", limit="memory", timed_out=False)
    assert result.exit_code is None and result.error is not None and result.error.code == "SANDBOX_DIED"
    assert result.limit == "memory"
