"""Approval rules in a policy: which calls ask, and patterns whose cost is bounded when the policy loads."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from policies.approvals import MAX_SUBJECT_CHARS, AskRule
from policies.loader import PolicyError, load_policy
from policies.model import Policy

BASE = Path(__file__).resolve().parents[2] / "policies" / "presets" / "default.toml"


def policy(extra: str, tmp_path: Path) -> Policy:
    path = tmp_path / "p.toml"
    path.write_text(BASE.read_text() + "\n" + extra)
    return load_policy(path)


def test_always_ask_and_rules_from_toml(tmp_path: Path) -> None:
    """A TOML policy's always_ask tools ask on every call; a rule asks only when its argument matches."""
    p = policy('always_ask = ["web_fetch"]\napproval_timeout_s = 5\n'
               '[[ask_rules]]\ntool = "bash"\npattern = \'rm\\s+-rf\'\n', tmp_path)
    assert p.approval_timeout_s == 5
    assert p.ask_reason("web_fetch", {"url": "https://example.com"}) is not None
    assert "bash.command" in (p.ask_reason("bash", {"command": "cd /tmp && rm  -rf x"}) or "")
    assert p.ask_reason("bash", {"command": "ls -la"}) is None
    assert p.ask_reason("read_file", {"path": "rm -rf"}) is None


def test_fullmatch_needs_the_whole_value() -> None:
    """``match = "fullmatch"`` asks only when the whole value matches; ``search`` when any part does."""
    full = AskRule(tool="bash", pattern=r"git push.*", match="fullmatch")
    part = AskRule(tool="bash", pattern=r"git push")
    assert full.matches({"command": "git push origin main"})
    assert not full.matches({"command": "echo hi; git push"})
    assert part.matches({"command": "echo hi; git push"})
    assert not AskRule(tool="bash", pattern=r"ls", match="fullmatch").matches({"command": "ls\n"})


def test_long_values_always_ask_and_non_strings_are_checked_as_json() -> None:
    """Padding a command past the checked length cannot slip past a rule; a list argument is checked as JSON."""
    rule = AskRule(tool="bash", pattern=r"^curl")
    assert rule.matches({"command": "x" * (MAX_SUBJECT_CHARS + 1)})
    assert not rule.matches({"command": "x" * MAX_SUBJECT_CHARS})
    listed = AskRule(tool="t", argument="paths", pattern=r'"/etc/')
    assert listed.matches({"paths": ["/tmp/a", "/etc/passwd"]})
    assert not listed.matches({"other": 1})


@pytest.mark.parametrize("pattern, why", [
    (r"(a)\1", "RE2"),
    (r"(?P<x>a)(?P=x)", "RE2"),
    (r"(?=a)b", "RE2"),
    (r"(unclosed", "RE2"),
    ("a" * 300, "at most 256"),
])
def test_unbounded_or_broken_patterns_are_refused(pattern: str, why: str) -> None:
    """What RE2 cannot match in linear time (back-references, look-arounds), and invalid or over-long
    patterns, are refused when the policy loads."""
    with pytest.raises(ValidationError, match=why):
        AskRule(tool="bash", pattern=pattern)


def test_bad_rule_in_a_file_names_the_field(tmp_path: Path) -> None:
    """An operator sees which field of which file is wrong."""
    with pytest.raises(PolicyError, match="ask_rules"):
        policy('[[ask_rules]]\ntool = "bash"\npattern = "(a)\\\\1"\n', tmp_path)


def test_backtracking_shapes_stay_linear_on_the_longest_value() -> None:
    """Patterns that make a backtracking engine run for minutes (``(a+)+$``, ``.*a.*b.*c.*d``) answer at once
    on the longest value checked: RE2 matches in linear time."""
    cases = [(r".*a.*b.*c.*d", "a" * (MAX_SUBJECT_CHARS // 2) + "b" * (MAX_SUBJECT_CHARS // 2)),
             (r"(a+)+$", "a" * (MAX_SUBJECT_CHARS - 1) + "!")]
    for pattern, subject in cases:
        rule = AskRule(tool="bash", pattern=pattern)
        started = time.perf_counter()
        for _ in range(100):
            assert not rule.matches({"command": subject})
        assert (time.perf_counter() - started) / 100 < 0.05  # measured ~0.1 ms; Python's re: minutes
