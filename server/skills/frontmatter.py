"""A small strict parser for the front matter of a ``SKILL.md`` (the Agent Skills format).

A tenant writes these files, so they are never given to a YAML loader: this reads only the subset skills use —
``key: value`` lines (plain, single- or double-quoted), ``>``/``|`` block scalars, a flow list ``[a, b]``, a
block list of ``- item`` lines, and one level of ``key: value`` under ``metadata``. No anchors, aliases, tags
or nesting beyond that: anything else is a ``FrontMatterError`` naming the line, so a malformed skill is
reported with its reason instead of being half-read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_FRONT_MATTER_LINES = 200
_KEY = re.compile(r"^([A-Za-z][A-Za-z0-9_-]{0,63}):(?:\s+(.*))?$")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/", "r": "\r", "0": "\0"}

Value = str | list[str] | dict[str, str]


class FrontMatterError(ValueError):
    """The front matter is missing or outside the subset we read; the message names the line."""


@dataclass(frozen=True)
class Parsed:
    fields: dict[str, Value]
    body: str
    body_line: int = field(default=1)  # 1-based line of the body's first line in the file


def _unquote(text: str, line_no: int) -> str:
    text = text.strip()
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise FrontMatterError(f"line {line_no}: unterminated double-quoted string")
        out, i, inner = [], 0, text[1:-1]
        while i < len(inner):
            ch = inner[i]
            if ch == "\\":
                if i + 1 >= len(inner) or inner[i + 1] not in _ESCAPES:
                    raise FrontMatterError(f"line {line_no}: unsupported escape in a double-quoted string")
                out.append(_ESCAPES[inner[i + 1]])
                i += 2
                continue
            if ch == '"':
                raise FrontMatterError(f"line {line_no}: stray double quote inside a string")
            out.append(ch)
            i += 1
        return "".join(out)
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'"):
            raise FrontMatterError(f"line {line_no}: unterminated single-quoted string")
        inner = text[1:-1]
        if re.search(r"(?<!')'(?!')", inner.replace("''", "")):
            raise FrontMatterError(f"line {line_no}: stray single quote inside a string")
        return inner.replace("''", "'")
    if text[:1] in ("&", "*", "!", "{", "@", "`", "%"):
        raise FrontMatterError(f"line {line_no}: {text[:1]!r} (anchors, aliases, tags, mappings) is not supported")
    return re.sub(r"\s+#.*$", "", text)  # a plain scalar's trailing comment


def _flow_list(text: str, line_no: int) -> list[str]:
    inner = text.strip()[1:-1].strip()
    if not inner:
        return []
    if "[" in inner or "{" in inner:
        raise FrontMatterError(f"line {line_no}: nested lists or mappings are not supported")
    return [_unquote(item, line_no) for item in inner.split(",") if item.strip()]


def _block_scalar(indicator: str, lines: list[str], start: int, line_no: int) -> tuple[str, int]:
    """The ``|`` or ``>`` scalar whose indented lines begin at ``lines[start]``; returns it and the next index."""
    if not re.fullmatch(r"[|>][+-]?", indicator):
        raise FrontMatterError(f"line {line_no}: block scalar indicator {indicator!r} is not supported")
    block: list[str] = []
    i = start
    indent: int | None = None
    while i < len(lines):
        line = lines[i]
        if line.strip() == "":
            block.append("")
            i += 1
            continue
        width = len(line) - len(line.lstrip(" "))
        if width == 0:
            break
        indent = width if indent is None else indent
        if width < indent:
            break
        block.append(line[indent:])
        i += 1
    while block and block[-1] == "":
        block.pop()
    if indicator[0] == "|":
        text = "\n".join(block)
    else:  # folded: lines of a paragraph joined by spaces, blank lines kept as newlines
        paragraphs = "\n".join(block).split("\n\n")
        text = "\n".join(" ".join(p.split("\n")) for p in paragraphs)
    return text.strip(), i  # chomping indicators are accepted; values are used trimmed


def _parse_fields(lines: list[str], first_line: int) -> dict[str, Value]:
    fields: dict[str, Value] = {}
    i = 0
    while i < len(lines):
        line_no = first_line + i
        line = lines[i]
        if line.strip() == "" or line.lstrip().startswith("#"):
            i += 1
            continue
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise FrontMatterError(f"line {line_no}: tabs are not allowed for indentation")
        if line[0] == " ":
            raise FrontMatterError(f"line {line_no}: unexpected indentation")
        match = _KEY.match(line.rstrip())
        if match is None:
            raise FrontMatterError(f"line {line_no}: expected 'key: value', got {line.strip()[:60]!r}")
        key, raw = match.group(1), (match.group(2) or "").strip()
        if key in fields:
            raise FrontMatterError(f"line {line_no}: {key!r} is given twice")
        i += 1
        if raw[:1] in ("|", ">"):
            fields[key], i = _block_scalar(raw, lines, i, line_no)
        elif raw.startswith("["):
            if not raw.endswith("]"):
                raise FrontMatterError(f"line {line_no}: a flow list must close on the same line")
            fields[key] = _flow_list(raw, line_no)
        elif raw:
            fields[key] = _unquote(raw, line_no)
        else:  # a block list or a one-level mapping follows, or nothing (an empty value)
            fields[key], i = _nested(lines, i, first_line)
    return fields


def _nested(lines: list[str], i: int, first_line: int) -> tuple[Value, int]:
    items: list[str] = []
    mapping: dict[str, str] = {}
    while i < len(lines) and (lines[i].startswith(" ") or lines[i].strip() == ""):
        line_no, text = first_line + i, lines[i].strip()
        i += 1
        if not text or text.startswith("#"):
            continue
        if text.startswith("- ") or text == "-":
            if mapping:
                raise FrontMatterError(f"line {line_no}: a list item inside a mapping")
            items.append(_unquote(text[1:], line_no))
            continue
        match = _KEY.match(text)
        if match is None or items:
            raise FrontMatterError(f"line {line_no}: expected '- item' or 'key: value', got {text[:60]!r}")
        value = match.group(2) or ""
        if value.startswith(("[", "|", ">")):
            raise FrontMatterError(f"line {line_no}: only plain values are supported one level down")
        mapping[match.group(1)] = _unquote(value, line_no)
    if mapping:
        return mapping, i
    return items if items else "", i


def parse(text: str) -> Parsed:
    """Split a ``SKILL.md`` into its front matter fields and its body (the instructions)."""
    text = text.removeprefix("\ufeff")
    lines = text.splitlines()
    if not lines or lines[0].rstrip() != "---":
        raise FrontMatterError("line 1: a SKILL.md starts with a '---' line opening its front matter")
    for end in range(1, min(len(lines), MAX_FRONT_MATTER_LINES + 2)):
        if lines[end].rstrip() == "---":
            break
    else:
        raise FrontMatterError(f"no closing '---' line within {MAX_FRONT_MATTER_LINES} lines of front matter")
    fields = _parse_fields(lines[1:end], 2)
    body = "\n".join(lines[end + 1:]).strip("\n")
    return Parsed(fields, body, end + 2)
