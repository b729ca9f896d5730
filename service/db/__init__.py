"""Postgres access: ``Database`` (one lazily created aiopg pool, made once per worker and passed
to whoever needs it) and schema migrations.

``DatabaseMetrics`` is what a ``Database`` reports to (the server wires prometheus-client's);
``DatabaseUnavailable`` means "Postgres cannot serve now", ``DatabaseClosed`` "used after
``close()``".
"""

from service.db import outbox
from service.db.database import (
    Database,
    DatabaseClosed,
    DatabaseMetrics,
    DatabaseUnavailable,
    Transaction,
)
from service.db.migrations import ensure_database, migrate, migrate_sync

__all__ = [
    "Database",
    "DatabaseClosed",
    "DatabaseMetrics",
    "DatabaseUnavailable",
    "Transaction",
    "ensure_database",
    "migrate",
    "migrate_sync",
    "outbox",
]
