"""server.jsonlimits: the raw-byte scan, the parsed-value walk, the audit's bounded copy and canonical hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from server.errors import Unprocessable
from server.jsonlimits import JsonLimits, bounded_form, canonical_chunks, check_value, scan_raw, sha256_of_value

LIMITS = JsonLimits(max_depth=64, max_items=1000)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for n in range(depth):
        value = {"a": value} if n % 2 else [value]
    return value


def code_of(call: Any) -> str:
    with pytest.raises(Unprocessable) as caught:
        call()
    return caught.value.code


def test_depth_at_the_limit_passes_and_one_more_is_refused() -> None:
    """64 nested containers pass the raw scan and the value walk; 65 are JSON_TOO_DEEP in both."""
    ok, deep = nested(64), nested(65)
    scan_raw(json.dumps(ok).encode(), LIMITS)
    check_value(ok, LIMITS)
    assert code_of(lambda: scan_raw(json.dumps(deep).encode(), LIMITS)) == "JSON_TOO_DEEP"
    assert code_of(lambda: check_value(deep, LIMITS)) == "JSON_TOO_DEEP"


def test_brackets_inside_strings_do_not_count() -> None:
    """Brackets and escaped quotes inside strings are text, not nesting."""
    text = '[' * 500 + '\\"' + '{' * 500
    scan_raw(json.dumps({"s": text, "t": ["]]]", "\\\\"]}).encode(), LIMITS)


def test_a_million_deep_body_is_refused_fast_without_recursion() -> None:
    """A 2 MB run of '[' is refused (the scan stops at the first bracket past the limit)."""
    assert code_of(lambda: scan_raw(b"[" * 2_000_000, LIMITS)) == "JSON_TOO_DEEP"


def test_too_many_items_is_too_large() -> None:
    """More values and keys than max_items is JSON_TOO_LARGE, in the raw scan and the value walk."""
    many = list(range(1001))
    assert code_of(lambda: scan_raw(json.dumps(many).encode(), LIMITS)) == "JSON_TOO_LARGE"
    assert code_of(lambda: check_value(many, LIMITS)) == "JSON_TOO_LARGE"
    scan_raw(json.dumps(list(range(900))).encode(), LIMITS)
    check_value(list(range(900)), LIMITS)


def test_bounded_form_is_shallow_and_small() -> None:
    """A 5000-deep, wide, long-string value becomes a copy at most 8 deep with markers saying what was cut."""
    value = {"deep": nested(5000), "wide": list(range(1000)), "long": "x" * 5000}
    form = bounded_form(value)
    encoded = json.dumps(form)  # would raise RecursionError if the copy were deep
    assert len(encoded) < 10_000
    assert "nested deeper than 8 levels" in encoded
    assert form["wide"][-1] == "…[744 more items]"
    assert form["long"].endswith("…[3976 more chars]")


def test_canonical_chunks_match_the_audit_canonical_json() -> None:
    """The iterative encoder writes exactly what json.dumps(sort_keys, compact, UTF-8) writes."""
    value = {"b": [1, 2.5, None, True, {"z": "é", "a": []}], "a": {}, "c": "\u2028\"q\""}
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert "".join(canonical_chunks(value)) == expected
    assert sha256_of_value(value) == hashlib.sha256(expected.encode()).hexdigest()
    sha256_of_value(nested(100_000))  # no RecursionError at any depth
