"""Throwaway, seeded Postgres databases for the benchmarks.

``seeded_database()`` creates a fresh database (``support.dbutil`` names it ``gs_test_<hex>``),
migrates it, inserts the notes the ``notes(first: 100)`` query reads, and drops it afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg2

from service.db.migrations import ensure_database, migrate_sync
from support import dbutil

SEED_NOTES = 100


def seed_notes(database_url: str, count: int = SEED_NOTES) -> None:
    """Insert ``count`` notes by user ``bench`` into a migrated database."""
    conn = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO notes (title, description, priority, created_by)"
                " SELECT 'note ' || i, 'the description of note ' || i, i %% 11, 'bench'"
                " FROM generate_series(1, %s) AS i",
                (count,),
            )
    finally:
        conn.close()


@contextlib.contextmanager
def seeded_database(count: int = SEED_NOTES) -> Iterator[str]:
    """Yield the URL of a new, migrated database holding ``count`` notes; drop it after."""
    url = dbutil.fresh_url()
    ensure_database(url)
    try:
        migrate_sync(url)
        seed_notes(url, count)
        yield url
    finally:
        dbutil.drop_database(url)
