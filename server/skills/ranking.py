"""Ranking skills against a query with SQLite FTS5's BM25.

Each catalog view (the skills one tenant sees) gets its own in-memory FTS5 table, so the statistics BM25
uses (document frequencies, lengths) are those of that tenant's skills. Names weigh most, then the
description (what the skill is for), then the instructions. The porter stemmer makes "reports" find
"report". The query is the user's free text: it is cut into words and each is quoted, so no FTS5 syntax
of the caller's is ever interpreted.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

from server.skills.model import Skill

WEIGHTS = (10.0, 4.0, 1.0)  # name, description, instructions
MAX_QUERY_WORDS = 64


def query_terms(query: str) -> list[str]:
    """The distinct words of ``query``, lower-cased, in order, at most ``MAX_QUERY_WORDS``."""
    seen: dict[str, None] = {}
    for word in re.findall(r"\w+", query.lower()):
        seen.setdefault(word, None)
    return list(seen)[:MAX_QUERY_WORDS]


class SkillIndex:
    """An in-memory FTS5 index over a fixed list of skills (built once per catalog snapshot)."""

    def __init__(self, skills: Sequence[Skill]) -> None:
        self._skills = list(skills)
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute("CREATE VIRTUAL TABLE skills USING fts5(name, description, body, "
                         "tokenize = 'porter unicode61 remove_diacritics 2')")
        self._db.executemany("INSERT INTO skills(rowid, name, description, body) VALUES (?, ?, ?, ?)",
                             [(i, s.name.replace("-", " "), s.description, s.instructions)
                              for i, s in enumerate(self._skills)])

    def match(self, query: str, limit: int) -> list[tuple[Skill, float]]:
        """Skills matching any word of ``query``, best first, with a positive score (higher is better)."""
        terms = query_terms(query)
        if not terms:
            return []
        expression = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        rows = self._db.execute(
            "SELECT rowid, bm25(skills, ?, ?, ?) AS rank FROM skills WHERE skills MATCH ? "
            "ORDER BY rank, rowid LIMIT ?", (*WEIGHTS, expression, limit)).fetchall()
        return [(self._skills[rowid], round(-rank, 6)) for rowid, rank in rows]

    def close(self) -> None:
        self._db.close()
