"""The strict SKILL.md front matter parser and the skill rules built on it."""

from __future__ import annotations

import pytest

from server.skills.frontmatter import FrontMatterError, parse
from server.skills.model import build

GOOD = """---
name: csv-report
description: >
  Turn a CSV file into a summary report
  with totals per column.
allowed-tools: bash read_file
license: 'MIT'
metadata:
  author: "Ada"
  version: 1.2  # a comment
---
# CSV report

Run `scripts/report.sh <file>`.
"""


def test_parses_the_subset_skills_use() -> None:
    """Folded scalars, quoted strings, a space-separated tool list and a one-level mapping come out as values."""
    skill = build(GOOD, directory="csv-report", source="tenant", path="/workspace/x", files=["scripts/report.sh"])
    assert skill.name == "csv-report"
    assert skill.description == "Turn a CSV file into a summary report with totals per column."
    assert skill.allowed_tools == ["bash", "read_file"]
    assert skill.license == "MIT"
    assert skill.metadata == {"author": "Ada", "version": "1.2"}
    assert skill.instructions.startswith("# CSV report")


def test_lists_in_flow_and_block_form() -> None:
    """`allowed-tools` may be a flow list, a block list, or comma-separated."""
    flow = parse("---\nallowed-tools: [bash, 'read_file']\n---\nbody").fields["allowed-tools"]
    block = parse("---\nallowed-tools:\n  - bash\n  - \"grep_search\"\n---\nbody").fields["allowed-tools"]
    assert flow == ["bash", "read_file"] and block == ["bash", "grep_search"]
    skill = build("---\nname: a\ndescription: d\nallowed-tools: bash, glob_search\n---\nbody", directory="a",
                  source="server", path="a", files=[])
    assert skill.allowed_tools == ["bash", "glob_search"]


def test_a_claude_code_pattern_stays_one_tool() -> None:
    """`Bash(git status:*)` is one entry, blanks and commas inside its parentheses included."""
    skill = build("---\nname: a\ndescription: d\nallowed-tools: Bash(git status:*), Read Edit(a, b)\n---\nbody",
                  directory="a", source="server", path="a", files=[])
    assert skill.allowed_tools == ["Bash(git status:*)", "Read", "Edit(a, b)"]


@pytest.mark.parametrize(("text", "reason"), [
    ("no front matter\n", "starts with a '---'"),
    ("---\nname: a\n", "no closing '---'"),
    ("---\nname: &x a\ndescription: *x\n---\nb", "anchors, aliases"),
    ("---\nname: !!python/object:os.system a\n---\nb", "anchors, aliases, tags"),
    ("---\nname: a\nname: b\n---\nb", "given twice"),
    ("---\njust text\n---\nb", "expected 'key: value'"),
    ("---\nname: \"open\n---\nb", "unterminated"),
    ("---\nmeta:\n  a: [1]\n---\nb", "only plain values"),
])
def test_refuses_what_it_does_not_read(text: str, reason: str) -> None:
    """Anything outside the subset is an error naming it, never a guess (no YAML loader sees tenant text)."""
    with pytest.raises(FrontMatterError, match=reason.replace("(", r"\(").replace("*", r"\*")):
        parse(text)


@pytest.mark.parametrize(("text", "reason"), [
    ("---\ndescription: d\n---\nbody", "'name' is required"),
    ("---\nname: a\n---\nbody", "'description' is required"),
    ("---\nname: Bad_Name\ndescription: d\n---\nbody", "lowercase letters"),
    ("---\nname: other\ndescription: d\n---\nbody", "does not match its directory"),
    ("---\nname: a\ndescription: d\n---\n\n", "body"),
    ("---\nname: a\ndescription: " + "x" * 1025 + "\n---\nbody", "at most 1024"),
    ("---\nname: a\ndescription: d\nmetadata: text\n---\nbody", "'metadata' must be a mapping"),
])
def test_skill_rules(text: str, reason: str) -> None:
    """The Agent Skills rules: required fields, the name's form and its directory, bounded lengths."""
    with pytest.raises(FrontMatterError, match=reason):
        build(text, directory="a", source="tenant", path="p", files=[])
