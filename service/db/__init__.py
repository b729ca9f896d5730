"""Postgres access: one lazily created aiopg pool per worker process, and schema migrations."""

from service.db.migrations import ensure_database, migrate, migrate_sync
from service.db.pool import (
    DatabaseUnavailable,
    close_pool,
    connection,
    execute,
    fetch,
    fetchone,
    get_pool,
    ping,
)

__all__ = [
    "DatabaseUnavailable",
    "close_pool",
    "connection",
    "ensure_database",
    "execute",
    "fetch",
    "fetchone",
    "get_pool",
    "migrate",
    "migrate_sync",
    "ping",
]
