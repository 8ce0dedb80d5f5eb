"""Which tool calls wait for a person's decision (``always_ask``, ``ask_rules``), validated when the policy loads.

A rule's pattern runs against text the model chose, so it is compiled with RE2 (google-re2), whose matching
time is linear in the text: no pattern, however written, backtracks catastrophically (Python's ``re`` took
minutes on ``.*a.*b.*c.*d`` over 4 KiB). RE2 refuses what it cannot bound (back-references, look-arounds),
and that refusal happens here, at load. The value checked is at most ``MAX_SUBJECT_CHARS``; a longer value
always asks, so padding a command cannot slip past a rule.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

import re2  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_PATTERN_CHARS = 256
MAX_SUBJECT_CHARS = 4096
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is reported as a policy error, not on stderr


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _OPTIONS)


class AskRule(BaseModel):
    """Calls of ``tool`` whose ``argument`` matches ``pattern`` wait for a decision."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tool: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$")
    argument: str = Field(default="command", min_length=1, max_length=64)
    pattern: str = Field(min_length=1, max_length=MAX_PATTERN_CHARS)
    match: Literal["search", "fullmatch"] = "search"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            _compiled(pattern)
        except re2.error as exc:
            detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise ValueError(f"not a pattern RE2 accepts (no back-references or look-arounds): {detail}") from None
        return pattern

    def matches(self, args: dict[str, Any]) -> bool:
        """Whether a call with these (validated) arguments must ask; a missing argument does not match."""
        if self.argument not in args:
            return False
        value = args[self.argument]
        subject = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
        if len(subject) > MAX_SUBJECT_CHARS:
            return True
        compiled = _compiled(self.pattern)
        found = compiled.fullmatch(subject) if self.match == "fullmatch" else compiled.search(subject)
        return found is not None

    def describe(self) -> str:
        return f"{self.tool}.{self.argument} {self.match}es {self.pattern!r}"
