"""Versioned schema migrations for both backends; append new steps, never edit old ones.

Each step is one script per dialect: most are portable and written once, the rest (types: ``BLOB``/``BYTEA``,
``REAL``/``DOUBLE PRECISION``, identity columns, SQLite's table rebuilds) say their PostgreSQL text beside
the SQLite one, so the two schemas stay in step by number. SQLite keeps its version in ``PRAGMA
user_version``; PostgreSQL in a ``schema_version`` table, each step committed with its new number under an
advisory lock so that servers starting at once on one database migrate it once. Why not a migration tool
(Alembic and the like): a handful of scripts and two dialects do not need a second schema language or an ORM, and
SQLite users keep the exact upgrade path they have today.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Step:
    """One schema version: the SQLite script and, where it differs, the PostgreSQL one."""

    sqlite: str
    postgresql: str | None = None

    def script(self, dialect: str) -> str:
        return self.sqlite if dialect == "sqlite" or self.postgresql is None else self.postgresql


MIGRATIONS: list[Step] = [
    # 1: the foundation
    Step(sqlite="""
    CREATE TABLE users (
        tenant_id TEXT PRIMARY KEY, user_id TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, title TEXT, model TEXT, system_prompt TEXT,
        metadata TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX sessions_by_tenant ON sessions (tenant_id, created_at, id);
    CREATE TABLE messages (
        id TEXT PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        role TEXT NOT NULL, content TEXT NOT NULL, created_at TEXT NOT NULL);
    CREATE INDEX messages_by_session ON messages (session_id);
    CREATE TABLE events (
        session_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL,
        created_at REAL NOT NULL, PRIMARY KEY (session_id, seq)) WITHOUT ROWID;
    CREATE TABLE provider_credentials (
        tenant_id TEXT NOT NULL, provider TEXT NOT NULL, secret BLOB NOT NULL, base_url TEXT,
        key_last4 TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (tenant_id, provider));
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, tenant_id TEXT, created_at TEXT NOT NULL);
    """, postgresql="""
    CREATE TABLE users (
        tenant_id TEXT PRIMARY KEY, user_id TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, title TEXT, model TEXT, system_prompt TEXT,
        metadata TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX sessions_by_tenant ON sessions (tenant_id, created_at, id);
    CREATE TABLE messages (
        id TEXT PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        role TEXT NOT NULL, content TEXT NOT NULL, created_at TEXT NOT NULL, position BIGSERIAL NOT NULL);
    CREATE INDEX messages_by_session ON messages (session_id, position);
    CREATE TABLE events (
        session_id TEXT NOT NULL, seq BIGINT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (session_id, seq));
    CREATE TABLE provider_credentials (
        tenant_id TEXT NOT NULL, provider TEXT NOT NULL, secret BYTEA NOT NULL, base_url TEXT,
        key_last4 TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (tenant_id, provider));
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, tenant_id TEXT, created_at TEXT NOT NULL);
    """),
    # 2: the session's todo list (todo_write), kept with the session
    Step("""
    ALTER TABLE sessions ADD COLUMN todos TEXT NOT NULL DEFAULT '[]';
    """),
    # 3: the OpenAnalyst sign-in (docs/account.md): a credential is keyed by its auth method too, so an OAuth
    # token and a manual key for the same provider live side by side; the tenant's preferred source
    Step(sqlite="""
    CREATE TABLE provider_credentials_v3 (
        tenant_id TEXT NOT NULL, provider TEXT NOT NULL, auth_method TEXT NOT NULL DEFAULT 'api_key',
        secret BLOB NOT NULL, base_url TEXT, key_last4 TEXT NOT NULL, updated_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, provider, auth_method));
    INSERT INTO provider_credentials_v3 (tenant_id, provider, auth_method, secret, base_url, key_last4, updated_at)
        SELECT tenant_id, provider, 'api_key', secret, base_url, key_last4, updated_at FROM provider_credentials;
    DROP TABLE provider_credentials;
    ALTER TABLE provider_credentials_v3 RENAME TO provider_credentials;
    CREATE TABLE provider_preferences (
        tenant_id TEXT NOT NULL, provider TEXT NOT NULL, preferred_source TEXT NOT NULL, updated_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, provider));
    """, postgresql="""
    ALTER TABLE provider_credentials ADD COLUMN auth_method TEXT NOT NULL DEFAULT 'api_key';
    ALTER TABLE provider_credentials DROP CONSTRAINT provider_credentials_pkey;
    ALTER TABLE provider_credentials ADD PRIMARY KEY (tenant_id, provider, auth_method);
    CREATE TABLE provider_preferences (
        tenant_id TEXT NOT NULL, provider TEXT NOT NULL, preferred_source TEXT NOT NULL, updated_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, provider));
    """),
    # 4: tool calls waiting for a person (docs/approvals.md) and runs for CI with their webhook deliveries
    # (docs/runs.md)
    Step(sqlite="""
    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, session_id TEXT NOT NULL, call_id TEXT NOT NULL,
        tool TEXT NOT NULL, arguments TEXT NOT NULL, reason_asked TEXT NOT NULL, status TEXT NOT NULL,
        created_at TEXT NOT NULL, expires_at TEXT NOT NULL, decided_at TEXT, decided_by_tenant TEXT,
        decided_by_key TEXT, reason TEXT);
    CREATE INDEX approvals_by_call ON approvals (session_id, call_id);
    CREATE INDEX approvals_pending ON approvals (status) WHERE status = 'pending';
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, session_id TEXT, status TEXT NOT NULL,
        message TEXT NOT NULL, environment TEXT, limits TEXT NOT NULL, webhook_url TEXT, webhook_secret BLOB,
        error_code TEXT, error_message TEXT, answer TEXT, input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, turns INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT);
    CREATE INDEX runs_by_tenant ON runs (tenant_id, created_at);
    CREATE TABLE run_deliveries (
        run_id TEXT NOT NULL, attempt INTEGER NOT NULL, event_id TEXT NOT NULL, url TEXT NOT NULL,
        attempted_at TEXT NOT NULL, status_code INTEGER, error TEXT, duration_ms REAL NOT NULL,
        succeeded INTEGER NOT NULL, next_attempt_at TEXT, PRIMARY KEY (run_id, attempt));
    """, postgresql="""
    CREATE TABLE approvals (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, tenant_id TEXT NOT NULL, session_id TEXT NOT NULL,
        call_id TEXT NOT NULL,
        tool TEXT NOT NULL, arguments TEXT NOT NULL, reason_asked TEXT NOT NULL, status TEXT NOT NULL,
        created_at TEXT NOT NULL, expires_at TEXT NOT NULL, decided_at TEXT, decided_by_tenant TEXT,
        decided_by_key TEXT, reason TEXT);
    CREATE INDEX approvals_by_call ON approvals (session_id, call_id);
    CREATE INDEX approvals_pending ON approvals (status) WHERE status = 'pending';
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, session_id TEXT, status TEXT NOT NULL,
        message TEXT NOT NULL, environment TEXT, limits TEXT NOT NULL, webhook_url TEXT, webhook_secret BYTEA,
        error_code TEXT, error_message TEXT, answer TEXT, input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0, cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
        turns INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT);
    CREATE INDEX runs_by_tenant ON runs (tenant_id, created_at);
    CREATE TABLE run_deliveries (
        run_id TEXT NOT NULL, attempt INTEGER NOT NULL, event_id TEXT NOT NULL, url TEXT NOT NULL,
        attempted_at TEXT NOT NULL, status_code INTEGER, error TEXT, duration_ms DOUBLE PRECISION NOT NULL,
        succeeded INTEGER NOT NULL, next_attempt_at TEXT, PRIMARY KEY (run_id, attempt));
    """),
    # 5: tenants' environments, each tenant's default one, and the environment a session runs in
    # (docs/environments.md)
    Step("""
    CREATE TABLE environments (
        tenant_id TEXT NOT NULL, name TEXT NOT NULL, definition TEXT NOT NULL, created_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, name));
    CREATE TABLE environment_defaults (tenant_id TEXT PRIMARY KEY, name TEXT NOT NULL);
    ALTER TABLE sessions ADD COLUMN environment TEXT;
    """),
]


def _check(version: int) -> None:
    if version > len(MIGRATIONS):
        raise RuntimeError(f"database schema version {version} is newer than this server ({len(MIGRATIONS)})")


def migrate(conn: sqlite3.Connection) -> int:
    """Bring a SQLite schema to the newest version; returns it. Each step commits atomically."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    _check(version)
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.executescript(f"BEGIN;\n{step.sqlite}\nPRAGMA user_version = {number};\nCOMMIT;")
    return len(MIGRATIONS)


MIGRATION_LOCK = 0x6F61_6D69  # pg_advisory_xact_lock key: one server migrates, the others wait for it


def migrate_postgresql(conn: Any) -> int:
    """Bring a PostgreSQL schema (``conn``: a psycopg connection in autocommit) to the newest version.

    Each step runs in its own transaction holding the advisory lock, and reads the version again under it,
    so two servers starting together apply every step once."""
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = 0 if row is None else int(row[0])
            _check(version)
            if version == len(MIGRATIONS):
                return version
            conn.execute(MIGRATIONS[version].script("postgresql"))
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version + 1,))
            else:
                conn.execute("UPDATE schema_version SET version = %s", (version + 1,))
