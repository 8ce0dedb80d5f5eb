"""What a skill is once read: a validated ``Skill``, or a ``Problem`` that names the skill and the reason.

The rules are the Agent Skills format's: ``name`` is 1-64 lowercase letters, digits and single hyphens and
matches its directory; ``description`` is 1-1024 characters; ``allowed-tools`` is a space- or
comma-separated string or a list; ``metadata`` maps strings to strings. A file that breaks one is a
``Problem`` and hides nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from server.skills.frontmatter import FrontMatterError, Parsed, Value, parse

Source = Literal["server", "tenant"]
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-)){0,62}[a-z0-9]$|^[a-z0-9]$")
MAX_DESCRIPTION = 1024
MAX_COMPATIBILITY = 500
MAX_ALLOWED_TOOLS = 64


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    source: Source
    instructions: str
    path: str  # where the client and the model find it: the sandbox path for a tenant's, the dir name for a server's
    allowed_tools: list[str] | None = None
    license: str | None = None
    compatibility: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # relative to the skill's directory, SKILL.md excluded
    root: str | None = field(default=None, compare=False)  # a server skill's skills directory on the host


@dataclass(frozen=True)
class Problem:
    name: str | None  # the directory name when the file gives none we can trust
    source: Source
    path: str
    reason: str


def _text(fields: dict[str, Value], key: str, limit: int, *, required: bool) -> str | None:
    value = fields.get(key)
    if value is None or value == "":
        if required:
            raise FrontMatterError(f"'{key}' is required")
        return None
    if not isinstance(value, str):
        raise FrontMatterError(f"'{key}' must be a string")
    if len(value) > limit:
        raise FrontMatterError(f"'{key}' is {len(value)} characters long; at most {limit}")
    return value


_TOOL_TOKEN = re.compile(r"[^\s,()]+(?:\([^()]*\))?")
"""One tool of a space- or comma-separated list; a Claude Code argument pattern such as ``Bash(git status:*)``
stays with its tool, blanks and commas inside the parentheses included."""


def _tools(value: Value | None) -> list[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        raise FrontMatterError("'allowed-tools' must be a string or a list")
    items = value if isinstance(value, list) else _TOOL_TOKEN.findall(value)
    tools = [t.strip() for t in items if t.strip()]
    if len(tools) > MAX_ALLOWED_TOOLS:
        raise FrontMatterError(f"'allowed-tools' names {len(tools)} tools; at most {MAX_ALLOWED_TOOLS}")
    return tools


def build(text: str, *, directory: str, source: Source, path: str, files: list[str],
          root: str | None = None) -> Skill:
    """The skill in ``text`` (a SKILL.md found in ``directory``), or ``FrontMatterError`` saying why not."""
    parsed: Parsed = parse(text)
    fields = parsed.fields
    name = _text(fields, "name", 64, required=True)
    assert name is not None
    if not NAME_RE.match(name):
        raise FrontMatterError(f"name {name!r} must be 1-64 lowercase letters, digits and single hyphens, "
                               "not starting or ending with a hyphen")
    if name != directory:
        raise FrontMatterError(f"name {name!r} does not match its directory {directory!r}")
    description = _text(fields, "description", MAX_DESCRIPTION, required=True)
    assert description is not None
    metadata = fields.get("metadata", {})
    if metadata == "":
        metadata = {}
    if not isinstance(metadata, dict):
        raise FrontMatterError("'metadata' must be a mapping of keys to strings")
    if not parsed.body.strip():
        raise FrontMatterError("the body (the skill's instructions) is empty")
    return Skill(name=name, description=" ".join(description.split()), source=source,
                 instructions=parsed.body.strip(), path=path,
                 allowed_tools=_tools(fields.get("allowed-tools", fields.get("allowed_tools"))),
                 license=_text(fields, "license", 200, required=False),
                 compatibility=_text(fields, "compatibility", MAX_COMPATIBILITY, required=False),
                 metadata=dict(metadata), files=files, root=root)
