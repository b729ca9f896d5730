"""Schema migrations: numbered SQL steps, applied once each, safe to run from many processes.

``MIGRATIONS[i]`` is version ``i + 1``. Append new steps; never edit or reorder applied ones.
``migrate`` takes a session advisory lock first, so concurrent runs (several hosts starting at
once) apply each version exactly once: the others wait, then find nothing left to do. Each
version runs in its own transaction together with its ``schema_migrations`` row.
"""

from __future__ import annotations

import asyncio

import aiopg
import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from service.db.database import driver_errors, libpq_connect_timeout, unavailable

# Key of the session advisory lock held while migrating (an arbitrary constant: "gqlsvc01").
MIGRATION_LOCK_KEY = 0x67716C73766330


MIGRATIONS: tuple[str, ...] = (
    # 1: notes
    """
    CREATE TABLE notes (
        id bigserial PRIMARY KEY,
        title text NOT NULL,
        description text,
        priority int NOT NULL DEFAULT 0,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    # 2: chat messages, read newest-first per room
    """
    CREATE TABLE chat_messages (
        id bigserial PRIMARY KEY,
        chatroom text NOT NULL,
        text text NOT NULL,
        sender text NOT NULL,
        sent_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX chat_messages_chatroom_id ON chat_messages (chatroom, id)
    """,
    # 3: the transactional outbox of subscription events (service/db/outbox.py)
    """
    CREATE TABLE event_outbox (
        id bigserial PRIMARY KEY,
        event_id uuid NOT NULL,
        channel text NOT NULL,
        message bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
)

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version int PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

# Generous: a migration may wait for another process's migration, or rewrite a big table.
MIGRATION_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 5.0


def _database_name(database_url: str) -> str:
    name = parse_dsn(database_url).get("dbname")
    if not name:
        raise ValueError(f"database URL names no database: {database_url!r}")
    return name


def ensure_database(database_url: str, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Create the database ``database_url`` names if it does not exist; True if we created it.

    Connects to the ``postgres`` maintenance database of the same server. Safe to run
    concurrently: losing the race to create it counts as "already there".
    """
    name = _database_name(database_url)
    maintenance = make_dsn(
        database_url, dbname="postgres", connect_timeout=libpq_connect_timeout(connect_timeout_s)
    )
    try:
        conn = psycopg2.connect(maintenance)
    except psycopg2.OperationalError as exc:
        raise unavailable(exc) from exc
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is not None:
                return False
            try:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except (psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
                # Another process created it between our check and our CREATE.
                return False
            return True
    finally:
        conn.close()


async def migrate(database_url: str) -> list[str]:
    """Apply the migrations not yet applied to ``database_url``; return their version numbers.

    The database must exist (see ``ensure_database``).
    """
    with driver_errors(f"no connection within {CONNECT_TIMEOUT_S} s"):
        conn = await aiopg.connect(
            database_url,
            timeout=CONNECT_TIMEOUT_S,
            connect_timeout=libpq_connect_timeout(CONNECT_TIMEOUT_S),
            enable_hstore=False,
        )
    applied: list[str] = []
    try:
        async with conn.cursor(timeout=MIGRATION_TIMEOUT_S) as cur:
            await cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            try:
                await cur.execute(_CREATE_LEDGER)
                await cur.execute("SELECT version FROM schema_migrations")
                done = {version for (version,) in await cur.fetchall()}
                for version, step in enumerate(MIGRATIONS, start=1):
                    if version in done:
                        continue
                    await cur.execute("BEGIN")
                    try:
                        await cur.execute(step)
                        await cur.execute(
                            "INSERT INTO schema_migrations (version) VALUES (%s)", (version,)
                        )
                        await cur.execute("COMMIT")
                    except BaseException:
                        if not conn.closed:
                            await cur.execute("ROLLBACK")
                        raise
                    applied.append(str(version))
            finally:
                if not conn.closed:
                    await cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    finally:
        await conn.close()
    return applied


def migrate_sync(database_url: str) -> list[str]:
    """Create the database if missing, then migrate it (for the ``migrate`` CLI command)."""
    ensure_database(database_url)
    return asyncio.run(migrate(database_url))
