"""What storage code may assume of a database: a connection protocol, a row protocol and one SQL style.

Our SQL is written once, with ``?`` placeholders and portable statements (``INSERT … ON CONFLICT``, no
``rowid``, no ``OR IGNORE``/``OR REPLACE``); SQLite runs it as written and the PostgreSQL backend turns the
placeholders into psycopg's ``%s`` in ``to_pyformat``, the one place that knows both styles. Write functions
are typed on ``Conn``, never on a driver's connection, so the same function runs on either backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]
Params = Sequence[Any]


class Row(Protocol):
    """A result row: by position (``row[0]``) or by column name (``row["id"]``), as ``sqlite3.Row``."""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...
    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    """The part of a DB-API cursor our write functions use."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """A connection inside a write transaction; both backends' writer connections satisfy it."""

    dialect: Dialect

    def execute(self, sql: str, params: Params = (), /) -> Cursor: ...
    def executemany(self, sql: str, params: Iterable[Params], /) -> Cursor: ...


def insertion_order(dialect: Dialect) -> str:
    """The column that orders a table's rows as they were inserted: SQLite's ``rowid``; PostgreSQL has none,
    so its tables that need it (``messages``) carry a ``position`` identity column."""
    return "rowid" if dialect == "sqlite" else "position"


def to_pyformat(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (and a literal ``%`` to ``%%``), leaving quoted text alone."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
            out.append("%%" if ch == "%" else ch)
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)
