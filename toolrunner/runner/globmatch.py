"""Glob patterns over '/'-separated relative paths, matched by simulating a state set (an NFA).

Python's `re` backtracks while holding the GIL, so a pattern such as ``*a*a*a*a*a*a*b`` against a long name
wedged the whole runner. Here every character of the path advances a set of pattern positions once, so a match
costs at most O(len(path) * len(pattern)) steps whatever the pattern. The state after a prefix can be kept and
fed more text, which lets a walk carry it down the tree and skip directories that can no longer match.

Syntax: ``*`` (any run within one segment), ``?`` (one character, not '/'), ``**/`` (zero or more whole
segments), ``**`` elsewhere (anything, '/' included), ``[abc]``, ``[a-z]``, ``[!x]`` or ``[^x]`` (one
character, never '/'), ``{a,b}`` alternatives (nestable, at most MAX_ALTERNATIVES after expansion) and ``\\x``
for a literal x. An unclosed ``[`` or ``{`` is literal.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

MAX_PATTERN = 4096
MAX_ALTERNATIVES = 256
MAX_EXPANDED = 65536  # characters over all alternatives: bounds the automaton's size
MAX_NESTING = 32
CACHE_LIMIT = 65536

State = frozenset[int]

_LIT, _ANY, _CLASS, _STAR, _DSTAR, _SEGS, _ACCEPT = range(7)
_EPSILON = (_STAR, _DSTAR, _SEGS)  # kinds that may also match nothing


class GlobError(ValueError):
    """The pattern is too large, nests too deeply or expands to too many alternatives."""


@dataclass(frozen=True)
class _Class:
    negate: bool
    chars: frozenset[str]
    ranges: tuple[tuple[str, str], ...]

    def matches(self, ch: str) -> bool:
        hit = ch in self.chars or any(lo <= ch <= hi for lo, hi in self.ranges)
        return hit != self.negate


Token = tuple[int, str | _Class | None]


class Glob:
    """A compiled pattern. ``match(path)``, or ``feed`` a state piece by piece and ask ``accepts``."""

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN:
            raise GlobError(f"the glob is longer than {MAX_PATTERN} characters")
        kinds: list[int] = []
        args: list[str | _Class | None] = []
        starts: list[int] = []
        for alt in _alternatives(pattern):
            starts.append(len(kinds))
            for kind, arg in alt:
                if kind == _SEGS and kinds and kinds[-1] == _SEGS and len(kinds) > starts[-1]:
                    continue  # `**/**/` is `**/`
                kinds.append(kind)
                args.append(arg)
            kinds.append(_ACCEPT)
            args.append(None)
        # closure[p]: the positions live once position p is entered (starred tokens may match nothing).
        closure: list[State] = [frozenset()] * len(kinds)
        for p in range(len(kinds) - 1, -1, -1):
            closure[p] = frozenset({p}) | closure[p + 1] if kinds[p] in _EPSILON else frozenset({p})
        self._kinds = kinds
        self._args = args
        self._closure = closure
        self._accepting = frozenset(p for p, k in enumerate(kinds) if k == _ACCEPT)
        self.start: State = frozenset().union(*(closure[s] for s in starts))
        self.size = len(kinds)
        self.steps = 0  # positions visited while computing transitions: the work done, for tests
        self._cache: dict[tuple[State, str], State] = {}

    def match(self, path: str) -> bool:
        return self.accepts(self.feed(self.start, path))

    def accepts(self, state: State) -> bool:
        return not self._accepting.isdisjoint(state)

    def feed(self, state: State, text: str) -> State:
        """The state after `text`; an empty state means no continuation can match (prune there)."""
        cache = self._cache
        for ch in text:
            if not state:
                break
            nxt = cache.get((state, ch))
            if nxt is None:
                nxt = self._step(state, ch)
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                cache[(state, ch)] = nxt
            state = nxt
        return state

    def _step(self, state: State, ch: str) -> State:
        kinds, args, closure = self._kinds, self._args, self._closure
        out: set[int] = set()
        self.steps += len(state)
        for p in state:
            kind = kinds[p]
            if kind == _LIT:
                if args[p] == ch:
                    out |= closure[p + 1]
            elif kind == _ANY:
                if ch != "/":
                    out |= closure[p + 1]
            elif kind == _CLASS:
                cls = args[p]
                if ch != "/" and isinstance(cls, _Class) and cls.matches(ch):
                    out |= closure[p + 1]
            elif kind == _STAR:
                if ch != "/":
                    out |= closure[p]
            elif kind == _DSTAR:
                out |= closure[p]
            elif kind == _SEGS:  # inside `**/`: anything, and a '/' may end it
                out.add(p)
                if ch == "/":
                    out |= closure[p + 1]
        return frozenset(out)


def _class_end(pat: str, i: int) -> int | None:
    """The index of the ']' closing the class opened at `i`, or None if it is never closed."""
    j = i + 1
    if j < len(pat) and pat[j] in "!^":
        j += 1
    if j < len(pat) and pat[j] == "]":
        j += 1  # a ']' first in the class is literal
    while j < len(pat) and pat[j] != "]":
        j += 2 if pat[j] == "\\" else 1
    return j if j < len(pat) else None


def _alternatives(pattern: str) -> list[list[Token]]:
    """Expand ``{a,b}`` groups into brace-free token lists.

    Each piece of text is tokenized on its own, so stars on either side of a brace never merge into `**`.
    """
    close: dict[int, int] = {}
    commas: dict[int, list[int]] = {}
    stack: list[int] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[" and (end := _class_end(pattern, i)) is not None:
            i = end + 1
            continue
        if c == "{":
            stack.append(i)
            commas[i] = []
            if len(stack) > MAX_NESTING:
                raise GlobError(f"the glob nests braces more than {MAX_NESTING} deep")
        elif c == "}" and stack:
            close[stack.pop()] = i
        elif c == "," and stack:
            commas[stack[-1]].append(i)
        i += 1
    out = _expand(pattern, 0, len(pattern), close, commas)
    if sum(map(len, out)) > MAX_EXPANDED:
        raise GlobError(f"the glob's alternatives add up to more than {MAX_EXPANDED} tokens")
    return out


def _expand(pat: str, lo: int, hi: int, close: dict[int, int], commas: dict[int, list[int]]) -> list[list[Token]]:
    results: list[list[Token]] = [[]]
    i = start = lo
    while i < hi:
        c = pat[i]
        if c == "\\":
            i += 2
        elif c == "[" and (end := _class_end(pat, i)) is not None and end < hi:
            i = end + 1
        elif c == "{" and i in close:
            end = close[i]
            bounds = [i, *commas[i], end]
            alts: list[list[Token]] = []
            for a, b in itertools.pairwise(bounds):
                alts += _expand(pat, a + 1, b, close, commas)
                _check_count(len(alts))
            head = _tokens(pat[start:i])
            _check_count(len(results) * len(alts))
            results = [r + head + alt for r in results for alt in alts]
            i = start = end + 1
        else:
            i += 1
    tail = _tokens(pat[start:hi])
    return [r + tail for r in results]


def _check_count(n: int) -> None:
    if n > MAX_ALTERNATIVES:
        raise GlobError(f"the glob expands to more than {MAX_ALTERNATIVES} alternatives")


def _tokens(pat: str) -> list[Token]:
    """Tokenize brace-free text: a run of stars is one token (`**/` if a '/' follows, else `**`, or `*`)."""
    out: list[Token] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "\\" and i + 1 < n:
            out.append((_LIT, pat[i + 1]))
            i += 2
        elif c == "*":
            j = i
            while j < n and pat[j] == "*":
                j += 1
            if j - i == 1:
                kind = _STAR
            elif j < n and pat[j] == "/":
                kind, j = _SEGS, j + 1
            else:
                kind = _DSTAR
            out.append((kind, None))
            i = j
        elif c == "?":
            out.append((_ANY, None))
            i += 1
        elif c == "[" and (end := _class_end(pat, i)) is not None:
            out.append((_CLASS, _parse_class(pat[i + 1 : end])))
            i = end + 1
        else:
            out.append((_LIT, c))
            i += 1
    return out


def _parse_class(body: str) -> _Class:
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    items: list[tuple[str, bool]] = []  # (character, escaped)
    i = 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            items.append((body[i + 1], True))
            i += 2
        else:
            items.append((body[i], False))
            i += 1
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    k = 0
    while k < len(items):
        if k + 2 < len(items) and items[k + 1] == ("-", False):
            lo, hi = items[k][0], items[k + 2][0]
            if lo > hi:
                raise GlobError(f"the glob has a reversed range {lo}-{hi}")
            ranges.append((lo, hi))
            k += 3
        else:
            chars.add(items[k][0])
            k += 1
    return _Class(negate, frozenset(chars), tuple(ranges))
