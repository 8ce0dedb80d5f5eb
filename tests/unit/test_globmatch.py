"""The glob matcher: its syntax, its prefix states (used to prune walks), its limits, and that no pattern
makes it backtrack (Python's `re` did, holding the GIL, and wedged the runner)."""

from __future__ import annotations

import pytest

from toolrunner.runner.globmatch import MAX_ALTERNATIVES, Glob, GlobError

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.py", "a.py", True),
        ("*.py", "src/a.py", False),  # `*` stays within a segment
        ("*", "", True),
        ("?", "a", True),
        ("?", "/", False),
        ("a?c", "a/c", False),
        ("**/*.py", "a.py", True),  # `**/` is zero or more whole segments
        ("**/*.py", "a/b/c.py", True),
        ("**/b", "xb", False),
        ("src/**", "src/a/b", True),  # `**` elsewhere is anything, '/' included
        ("a**b", "a/x/b", True),
        ("**/**/**/x", "x", True),
        ("**/**/**/x", "a/b/c/d/x", True),
        ("src/?.{py,md}", "src/a.md", True),
        ("src/?.{py,md}", "src/a.rs", False),
        ("{a,b/{c,d}}", "b/d", True),  # nested alternatives
        ("{a,b/{c,d}}", "b", False),
        ("x{,y}", "x", True),  # an empty alternative
        ("{a}", "a", True),
        ("a{b", "a{b", True),  # unbalanced: literal
        ("a}b", "a}b", True),
        ("a,b", "a,b", True),
        ("[abc]", "b", True),
        ("[a-c]x", "bx", True),
        ("[a-c]x", "dx", False),
        ("[!x]*", "abc", True),
        ("[!x]*", "xbc", False),
        ("[^x]*", "xbc", False),
        ("[!x]", "/", False),  # a class never matches '/'
        ("[]]", "]", True),  # ']' first is literal
        ("[!]]", "a", True),
        ("[a-]", "-", True),
        ("[\\-a]", "-", True),
        ("[x", "[x", True),  # unclosed: literal
        ("\\*", "*", True),
        ("\\*", "a", False),
        ("a\\{b,c}", "a{b,c}", True),
        ("*{*,b}**/x", "q/x", True),  # stars either side of a brace do not merge
        ("*{*,b}**/x", "qx", True),
    ],
)
def test_syntax(pattern: str, path: str, expected: bool) -> None:
    """Each construct matches what the tool documents, over '/'-separated relative paths."""
    assert Glob(pattern).match(path) is expected


def test_prefix_state_says_when_a_directory_cannot_match() -> None:
    """The state after `dir/` is empty exactly when nothing below the directory can match (so walks prune)."""
    g = Glob("src/**/*.py")
    assert not g.feed(g.start, "docs/")
    inside = g.feed(g.start, "src/")
    assert inside and g.accepts(g.feed(inside, "a.py"))
    assert g.accepts(g.feed(g.feed(inside, "x/y/"), "b.py"))
    flat = Glob("*.py")
    assert not flat.feed(flat.start, "src/")


@pytest.mark.parametrize(
    "pattern",
    [
        "{a,b}" * 9,  # 512 alternatives
        "{" + ",".join(str(i) for i in range(MAX_ALTERNATIVES + 1)) + "}",
        "{" * 40 + "}" * 40,
        "x" * 5000,
        "[z-a]",
    ],
)
def test_limits_are_errors(pattern: str) -> None:
    """Too many alternatives, too deep nesting, too long, or a reversed range: GlobError (INVALID_INPUT)."""
    with pytest.raises(GlobError):
        Glob(pattern)


def test_many_alternatives_within_the_bound() -> None:
    g = Glob("{a,b}" * 8)  # 256: allowed
    assert g.match("ab" * 4) and not g.match("ab" * 4 + "a")


@pytest.mark.timeout(10)
def test_star_run_is_linear() -> None:
    """`*a*a…*b` against a long run of `a`: exponential for a backtracking engine, linear here."""
    pattern = "*a" * 12 + "*b"
    name = "a" * 50_000
    g = Glob(pattern)
    assert not g.match(name)
    assert g.steps <= len(name) * g.size  # each character visits each position at most once
    assert Glob(pattern).match(name + "b")


@pytest.mark.timeout(10)
def test_nested_globstars_are_linear() -> None:
    """`**/**/…/x` against a deep path does not explode, and still matches where it should."""
    g = Glob("**/" * 500 + "x")
    path = "a/" * 20_000
    assert not g.match(path + "y")
    assert g.match(path + "x")
    assert g.steps <= (len(path) + 1) * g.size


@pytest.mark.timeout(10)
def test_alternatives_of_stars_are_linear() -> None:
    """Many alternatives, each a run of stars, against a long name: still one pass over the name."""
    alts = ",".join("*a" * 6 + f"*{i}" for i in range(128))
    g = Glob("{" + alts + "}")
    name = "a" * 5_000
    assert not g.match(name)
    assert g.steps <= len(name) * g.size
    assert g.match(name + "17")
