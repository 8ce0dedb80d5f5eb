"""Depth and size limits for untrusted JSON, checked without recursion.

Python's parser, pydantic's serializer and ``jsonschema`` all recurse, so a deeply nested document turns into a
``RecursionError`` (a 500) wherever it is touched first, even long after it was stored. ``scan_raw`` checks the
raw bytes *before* ``json.loads``: strings are blanked by one C-speed regex pass, then only the bracket bytes
are walked, stopping at the first one past the limit. ``check_value`` does the same for an already parsed value
(a model's tool call), with an explicit stack. ``bounded_form`` and ``canonical_bytes`` give the audit log a
small, shallow copy of any input and the hash of all of it, again without recursing on the untrusted value.

The byte scan is only right for UTF-8 (where a quote or bracket byte is always that character), while
``json.loads(bytes)`` also accepts UTF-16 and UTF-32, whose bytes can hide brackets inside apparent strings.
So a body in any other encoding is refused first (400 ``BODY_NOT_UTF8``): RFC 8259 §8.1 requires UTF-8
between systems anyway.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from server.errors import BadRequest, Unprocessable

TOO_DEEP, TOO_LARGE, NOT_UTF8 = "JSON_TOO_DEEP", "JSON_TOO_LARGE", "BODY_NOT_UTF8"
_UTF8 = frozenset({"utf-8", "utf-8-sig"})
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = frozenset(b"[{")


@dataclass(frozen=True)
class JsonLimits:
    """``max_depth`` nested arrays/objects; ``max_items`` values and keys (counted from structural bytes)."""

    max_depth: int = 64
    max_items: int = 100_000

    def too_deep(self) -> Unprocessable:
        return Unprocessable(TOO_DEEP, f"the JSON is nested deeper than the limit of {self.max_depth} levels")

    def too_large(self) -> Unprocessable:
        return Unprocessable(TOO_LARGE, f"the JSON has more than the limit of {self.max_items} values and keys")


def scan_raw(raw: bytes, limits: JsonLimits) -> None:
    """Raise 422 ``JSON_TOO_DEEP`` / ``JSON_TOO_LARGE`` for a body over the limits (malformed JSON is left to
    the parser: this only has to be right for documents that would parse), and 400 ``BODY_NOT_UTF8`` for a
    body the JSON parser would read as UTF-16 or UTF-32."""
    check_utf8(raw)
    bare = _STRING.sub(b'""', raw)
    # Every value but the first follows a ',' or a ':' (keys follow '{' or ','), so this bounds values + keys.
    items = bare.count(b",") + bare.count(b":") + 1
    if items > limits.max_items:
        raise limits.too_large()
    depth = 0
    for byte in bare.translate(None, _NOT_BRACKET):
        if byte in _OPEN:
            depth += 1
            if depth > limits.max_depth:
                raise limits.too_deep()
        else:
            depth -= 1


def check_utf8(raw: bytes) -> None:
    """Refuse a body that is not UTF-8: by the same detection ``json.loads`` uses (NUL byte patterns, BOMs),
    then by strict decoding, so what is scanned is exactly what the parser will read."""
    if not raw:
        return
    encoding = json.detect_encoding(raw)
    if encoding in _UTF8:
        try:
            raw.decode(encoding)
            return
        except UnicodeDecodeError:
            pass
    found = "" if encoding in _UTF8 else f" (it looks like {encoding.upper()})"
    raise BadRequest(NOT_UTF8, f"the request body must be JSON encoded as UTF-8 (RFC 8259){found}")


def check_value(value: Any, limits: JsonLimits) -> None:
    """The same limits for a parsed value (a model's tool arguments), walked with an explicit stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    items = 0
    while stack:
        node, depth = stack.pop()
        items += 1
        if items > limits.max_items:
            raise limits.too_large()
        if isinstance(node, dict):
            if depth >= limits.max_depth:
                raise limits.too_deep()
            items += len(node)  # the keys
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple):
            if depth >= limits.max_depth:
                raise limits.too_deep()
            stack.extend((v, depth + 1) for v in node)


def bounded_form(value: Any, *, max_depth: int = 8, max_items: int = 256, max_chars: int = 1024) -> Any:
    """A shallow, small copy for the audit record: containers below ``max_depth`` become a marker string,
    only the first ``max_items`` entries of each container are kept, strings are cut at ``max_chars``. The
    recursion is bounded by ``max_depth``, not by the input."""

    def copy(node: Any, depth: int) -> Any:
        if isinstance(node, str):
            return node if len(node) <= max_chars else node[:max_chars] + f"…[{len(node) - max_chars} more chars]"
        if isinstance(node, dict | list | tuple):
            if depth >= max_depth:
                return f"…[{type(node).__name__} nested deeper than {max_depth} levels]"
            if isinstance(node, dict):
                out: dict[str, Any] = {}
                for n, (key, item) in enumerate(node.items()):
                    if n == max_items:
                        out["…"] = f"{len(node) - max_items} more keys"
                        break
                    out[copy(str(key), depth)] = copy(item, depth + 1)
                return out
            items = [copy(item, depth + 1) for item in list(node)[:max_items]]
            if len(node) > max_items:
                items.append(f"…[{len(node) - max_items} more items]")
            return items
        if node is None or isinstance(node, bool | int | float):
            return str(node) if isinstance(node, float) and not math.isfinite(node) else node
        return f"…[{type(node).__name__}]"

    return copy(value, 0)


def canonical_chunks(value: Any) -> Iterator[str]:
    """Canonical JSON (sorted keys, no whitespace, UTF-8 as itself) of any depth, produced with a stack."""
    stack: list[tuple[bool, Any]] = [(False, value)]  # (is literal text, payload)
    while stack:
        literal, item = stack.pop()
        if literal:
            yield item
        elif isinstance(item, dict):
            keys = sorted(item, key=str)
            stack.append((True, "}"))
            for n, key in enumerate(reversed(keys)):
                stack.append((False, item[key]))
                stack.append((True, json.dumps(str(key), ensure_ascii=False) + ":"))
                if n != len(keys) - 1:
                    stack.append((True, ","))
            stack.append((True, "{"))
        elif isinstance(item, list | tuple):
            stack.append((True, "]"))
            for n, element in enumerate(reversed(item)):
                stack.append((False, element))
                if n != len(item) - 1:
                    stack.append((True, ","))
            stack.append((True, "["))
        else:
            yield json.dumps(item, ensure_ascii=False, default=repr)


def sha256_of_value(value: Any) -> str:
    digest = hashlib.sha256()
    for chunk in canonical_chunks(value):
        digest.update(chunk.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()
