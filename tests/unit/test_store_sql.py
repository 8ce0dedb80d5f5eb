"""Our one SQL style and how the PostgreSQL backend reads it; which database the settings select."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from server.settings import Settings
from server.store.db import Database
from server.store.open import make_store
from server.store.postgres import PgRow, PostgresStore
from server.store.sql import insertion_order, to_pyformat


def test_placeholders_become_psycopgs_and_quoted_text_is_left_alone() -> None:
    assert to_pyformat("SELECT * FROM t WHERE a = ? AND b IN (?, ?)") == \
        "SELECT * FROM t WHERE a = %s AND b IN (%s, %s)"
    assert to_pyformat("SELECT '?', \"x?\" FROM t WHERE a LIKE '50%' AND b = ?") == \
        "SELECT '?', \"x?\" FROM t WHERE a LIKE '50%%' AND b = %s"
    assert to_pyformat("SELECT a % 2 FROM t") == "SELECT a %% 2 FROM t"
    assert to_pyformat("SELECT 'it''s ?' WHERE x = ?") == "SELECT 'it''s ?' WHERE x = %s"


def test_rows_read_by_position_and_name() -> None:
    row = PgRow((1, "a"), {"seq": 0, "type": 1})
    assert row[0] == row["seq"] == 1 and row["type"] == "a" and list(row) == [1, "a"] and len(row) == 2
    assert row.keys() == ["seq", "type"]
    assert insertion_order("sqlite") == "rowid" and insertion_order("postgresql") == "position"


def test_settings_select_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENANALYST_DATABASE_URL", raising=False)
    assert isinstance(make_store(Settings(data_dir=tmp_path)), Database)
    store = make_store(Settings(data_dir=tmp_path, database_url="postgresql://u:p@db.internal/oa"))
    assert isinstance(store, PostgresStore) and store.dialect == "postgresql"
    with pytest.raises(ValidationError, match="postgresql:// URL"):
        Settings(data_dir=tmp_path, database_url="mysql://u@h/db")
    assert "p@db" not in repr(Settings(data_dir=tmp_path, database_url="postgresql://u:p@db/oa"))
