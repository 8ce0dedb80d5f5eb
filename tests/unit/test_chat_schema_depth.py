"""Red-team finding 2, last line: ``check_schema`` recurses, so an output_schema nested past Python's limit
(which the body depth limit normally stops first) is a validation error (422), never a RecursionError (500)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from server.api.chat import ChatBody


def test_an_output_schema_too_deep_to_check_is_a_validation_error() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(450):  # 900 levels of JSON, as the red team sent
        schema = {"type": "object", "properties": {"x": schema}}
    with pytest.raises(ValidationError) as refused:
        ChatBody.model_validate({"message": "hi", "output_schema": schema})
    assert "nested too deeply" in str(refused.value)
    shallow = {"type": "object", "properties": {"x": {"type": "string"}}}
    assert ChatBody.model_validate({"message": "hi", "output_schema": shallow}).output_schema == shallow
