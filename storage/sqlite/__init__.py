"""The SQLite store (the default): `store` holds the queries and schema, `reports` the report aggregates."""

from storage.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
