"""Which database a server uses: SQLite in the data directory unless ``OPENANALYST_DATABASE_URL`` names one."""

from __future__ import annotations

from server.settings import Settings
from server.store.db import Database
from server.store.store import Store


def make_store(settings: Settings) -> Store:
    """The configured backend, not yet opened."""
    url = settings.database_url.get_secret_value() if settings.database_url is not None else ""
    if url:
        from server.store.postgres import PostgresStore  # psycopg is imported only by servers that use it

        return PostgresStore(url)
    return Database(settings.db_path)
