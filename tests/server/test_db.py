"""service.db against a real Postgres: migrations, the Database and its pool, failing fast,
recovering, and the loop and process a Database belongs to."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator

import aiopg
import psycopg2
import pytest

from service.db import (
    Database,
    DatabaseClosed,
    DatabaseUnavailable,
    ensure_database,
    migrate,
    migrate_sync,
)
from service.db.migrations import MIGRATIONS
from service.settings import Settings
from support.dbutil import (
    TcpProxy,
    admin_query,
    database_exists,
    database_name,
    drop_database,
    fresh_url,
    unused_port,
    url_for,
)
from support.polling import apoll_until, poll_until

ALL_VERSIONS = [str(version) for version in range(1, len(MIGRATIONS) + 1)]
# A hang guard, not a performance target: failing "fast" means well under this.
HANG_GUARD_S = 5.0


def fast_settings(url: str, **overrides: float) -> Settings:
    values = {"db_connect_timeout_s": 1.0, "db_acquire_timeout_s": 1.0, **overrides}
    return Settings(database_url=url, **values)  # type: ignore[arg-type]


class Recorded:
    """A ``DatabaseMetrics`` that adds up what it is told."""

    def __init__(self) -> None:
        self.size = 0
        self.in_use = 0
        self.queries: list[float] = []

    def pool_changed(self, size_delta: int, in_use_delta: int) -> None:
        self.size += size_delta
        self.in_use += in_use_delta

    def query_observed(self, seconds: float) -> None:
        self.queries.append(seconds)


def sessions(url: str) -> int:
    """Client sessions connected to the database of ``url`` (the admin's own is elsewhere)."""
    rows = admin_query(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database_name(url),)
    )
    return int(rows[0][0])


async def sessions_become(url: str, count: int) -> None:
    """Poll until ``count`` sessions remain (a closed session leaves the view a moment later)."""
    await apoll_until(
        lambda: sessions(url) == count, timeout_s=10, what=f"{count} sessions on {url}"
    )


def backend_pids(url: str) -> set[int]:
    rows = admin_query("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database_name(url),))
    return {pid for (pid,) in rows}


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """A ``Database`` for the test's fresh database, closed after the test."""
    async with Database(Settings(database_url=db_url)) as database:
        yield database


# --- migrations -------------------------------------------------------------------------------


async def test_migrate_applies_everything_once_then_nothing(blank_db_url: str) -> None:
    assert await migrate(blank_db_url) == ALL_VERSIONS
    assert await migrate(blank_db_url) == []
    async with Database(Settings(database_url=blank_db_url)) as db:
        rows = await db.fetch("SELECT version FROM schema_migrations ORDER BY 1")
    assert [str(version) for (version,) in rows] == ALL_VERSIONS


async def test_concurrent_migrations_apply_each_version_once(blank_db_url: str) -> None:
    results = await asyncio.gather(*(migrate(blank_db_url) for _ in range(3)))
    assert sorted(version for applied in results for version in applied) == ALL_VERSIONS
    async with Database(Settings(database_url=blank_db_url)) as db:
        rows = await db.fetch("SELECT count(*), count(DISTINCT version) FROM schema_migrations")
    assert rows == [(len(MIGRATIONS), len(MIGRATIONS))]


async def test_migrations_create_the_tables_and_index(db: Database) -> None:
    tables = await db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
    )
    assert tables == [
        ("chat_messages",),
        ("event_outbox",),
        ("notes",),
        ("schema_migrations",),
    ]
    index = await db.fetchone(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'chat_messages_chatroom_id'"
    )
    assert index is not None and "(chatroom, id)" in index[0]


async def test_ensure_database_creates_a_missing_database_once() -> None:
    url = fresh_url()
    try:
        assert not database_exists(url)
        # Two at once: exactly one creates it, the other finds it (or loses the race) quietly.
        created = await asyncio.gather(*(asyncio.to_thread(ensure_database, url) for _ in range(2)))
        assert sorted(created) == [False, True]
        assert database_exists(url)
        assert ensure_database(url) is False
    finally:
        drop_database(url)


def test_migrate_sync_creates_and_migrates() -> None:
    url = fresh_url()
    try:
        assert migrate_sync(url) == ALL_VERSIONS
        assert migrate_sync(url) == []
    finally:
        drop_database(url)


async def test_migrate_against_a_dead_server_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=r"^database unavailable: "):
        await migrate(f"postgresql://postgres@127.0.0.1:{unused_port()}/whatever")
    assert time.monotonic() - started < HANG_GUARD_S


def test_ensure_database_against_a_dead_server_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=r"^database unavailable: "):
        ensure_database(f"postgresql://postgres@127.0.0.1:{unused_port()}/whatever")
    assert time.monotonic() - started < HANG_GUARD_S


# --- statements and the pool ------------------------------------------------------------------


async def test_fetch_fetchone_execute_and_query_metrics(db_url: str) -> None:
    metrics = Recorded()
    async with Database(Settings(database_url=db_url), metrics=metrics) as db:
        assert await db.execute("CREATE TABLE t (n int)") == -1
        assert await db.execute("INSERT INTO t VALUES (1), (2), (3)") == 3
        assert await db.fetch("SELECT n FROM t WHERE n > %s ORDER BY n", (1,)) == [(2,), (3,)]
        assert await db.fetchone("SELECT n FROM t ORDER BY n") == (1,)
        assert await db.fetchone("SELECT n FROM t WHERE n > 5") is None
    assert len(metrics.queries) == 5
    assert all(seconds >= 0 for seconds in metrics.queries)


async def test_the_first_concurrent_calls_share_one_pool(db_url: str) -> None:
    metrics = Recorded()
    settings = Settings(database_url=db_url, db_pool_min_size=1, db_pool_max_size=1)
    async with Database(settings, metrics=metrics) as db:
        rows = await asyncio.gather(*(db.fetchone("SELECT %s", (i,)) for i in range(5)))
        assert rows == [(i,) for i in range(5)]
        assert (metrics.size, metrics.in_use) == (1, 0)
        assert sessions(db_url) == 1
    assert (metrics.size, metrics.in_use) == (0, 0)


async def test_pool_metrics_follow_checkouts_and_close(db_url: str) -> None:
    metrics = Recorded()
    settings = Settings(database_url=db_url, db_pool_min_size=1, db_pool_max_size=4)
    db = Database(settings, metrics=metrics)
    assert await db.ping()
    assert (metrics.size, metrics.in_use) == (1, 0)
    async with db.connection() as first, db.connection() as second:
        assert first is not second
        assert (metrics.size, metrics.in_use) == (2, 2)
    assert (metrics.size, metrics.in_use) == (2, 0)
    await db.close()
    assert (metrics.size, metrics.in_use) == (0, 0)


async def test_sql_errors_pass_through_and_release_the_connection(db_url: str) -> None:
    metrics = Recorded()
    settings = Settings(database_url=db_url, db_pool_min_size=0, db_pool_max_size=1)
    async with Database(settings, metrics=metrics) as db:
        with pytest.raises(psycopg2.errors.UndefinedTable):
            await db.fetch("SELECT * FROM no_such_table")
        assert metrics.in_use == 0
        # The only connection went back to the pool: the next query gets it.
        assert await db.fetchone("SELECT 1") == (1,)


async def test_acquire_times_out_when_the_pool_is_exhausted(db_url: str) -> None:
    settings = fast_settings(db_url, db_pool_max_size=1, db_acquire_timeout_s=0.2)
    async with Database(settings) as db:
        async with db.connection():
            started = time.monotonic()
            with pytest.raises(
                DatabaseUnavailable, match=r"^database unavailable: no free connection"
            ):
                await db.fetchone("SELECT 1")
            assert time.monotonic() - started < HANG_GUARD_S
        assert await db.fetchone("SELECT 1") == (1,)


async def test_a_dead_port_fails_fast_every_time() -> None:
    settings = fast_settings(f"postgresql://postgres@127.0.0.1:{unused_port()}/nothing")
    async with Database(settings) as db:
        for _ in range(2):  # the failed pool is not kept: each call tries again, and fails fast
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match=r"^database unavailable: "):
                await db.fetch("SELECT 1")
            assert time.monotonic() - started < HANG_GUARD_S


async def test_a_server_that_never_answers_times_out() -> None:
    # Accepts TCP connections (the kernel completes the handshake) but never speaks.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        async with Database(fast_settings(f"postgresql://postgres@127.0.0.1:{port}/x")) as db:
            started = time.monotonic()
            # Concurrent callers share the connect deadline; they do not queue one after another.
            results = await asyncio.gather(
                *(db.fetchone("SELECT 1") for _ in range(5)), return_exceptions=True
            )
            assert time.monotonic() - started < HANG_GUARD_S
            for result in results:
                assert isinstance(result, DatabaseUnavailable)
                assert str(result).startswith("database unavailable: no connection within 1.0 s")
            assert await db.ping(timeout_s=0.3) is False


async def test_a_pool_that_failed_to_start_is_retried() -> None:
    url = fresh_url()  # this database does not exist yet, so the first pool cannot connect
    try:
        async with Database(fast_settings(url)) as db:
            with pytest.raises(DatabaseUnavailable, match="does not exist"):
                await db.fetchone("SELECT 1")
            ensure_database(url)
            assert await db.fetchone("SELECT 1") == (1,)
    finally:
        drop_database(url)


async def test_pool_recovers_after_its_backends_are_terminated(db_url: str) -> None:
    metrics = Recorded()
    settings = Settings(database_url=db_url, db_pool_min_size=2, db_pool_max_size=2)
    async with (
        Database(settings, metrics=metrics) as db,
        aiopg.connect(url_for("postgres")) as admin,
        admin.cursor() as cur,
    ):
        for _ in range(5):
            # Both connections serve a statement, then the server ends them while idle...
            assert await asyncio.gather(db.fetchone("SELECT 1"), db.fetchone("SELECT 2")) == [
                (1,),
                (2,),
            ]
            assert metrics.size == 2
            await cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                (database_name(db_url),),
            )
            assert await cur.fetchone() == (2,)
            # ...and the very next statement succeeds, whether or not we saw them go yet.
            assert await db.fetchone("SELECT 3") == (3,)


async def test_outage_fails_fast_then_recovers_and_ping_follows(db_url: str) -> None:
    proxy = TcpProxy()
    await proxy.start()
    try:
        async with Database(fast_settings(proxy.url(database_name(db_url)))) as db:
            assert await db.fetchone("SELECT 1") == (1,)
            assert await db.ping() is True

            await proxy.stop()  # Postgres "goes down": open connections cut, new ones refused
            for _ in range(2):
                started = time.monotonic()
                with pytest.raises(DatabaseUnavailable, match=r"^database unavailable: "):
                    await db.fetchone("SELECT 1")
                assert time.monotonic() - started < HANG_GUARD_S
            started = time.monotonic()
            assert await db.ping() is False
            assert time.monotonic() - started < HANG_GUARD_S

            await proxy.start()  # and comes back on the same address
            await apoll_until(db.ping, timeout_s=10, what="ping to succeed after the outage")
            assert await db.fetchone("SELECT 1") == (1,)
    finally:
        await proxy.stop()


async def test_ping_of_a_dead_server_is_false_and_fast(db: Database) -> None:
    assert await db.ping() is True
    dead = fast_settings(f"postgresql://postgres@127.0.0.1:{unused_port()}/nothing")
    async with Database(dead) as down:
        started = time.monotonic()
        assert await down.ping() is False
        assert time.monotonic() - started < HANG_GUARD_S


# --- lifetime: independence, close, loops, fork ------------------------------------------------


async def test_two_databases_are_independent(db_url: str) -> None:
    settings = Settings(database_url=db_url, db_pool_min_size=1, db_pool_max_size=1)
    first_metrics, second_metrics = Recorded(), Recorded()
    first = Database(settings, metrics=first_metrics)
    async with Database(settings, metrics=second_metrics) as second:
        assert await first.fetchone("SELECT 1") == (1,)
        assert await second.fetchone("SELECT 2") == (2,)
        assert sessions(db_url) == 2  # a pool each
        assert (first_metrics.size, second_metrics.size) == (1, 1)

        await first.close()
        assert first.closed and not second.closed
        assert (first_metrics.size, second_metrics.size) == (0, 1)
        await sessions_become(db_url, 1)
        assert await second.fetchone("SELECT 3") == (3,)
        assert await second.ping() is True


async def test_a_closed_database_stays_closed(db_url: str) -> None:
    db = Database(Settings(database_url=db_url))
    assert await db.fetchone("SELECT 1") == (1,)
    await db.close()
    await db.close()  # idempotent
    assert db.closed
    for call in (db.fetch("SELECT 1"), db.fetchone("SELECT 1"), db.execute("SELECT 1")):
        with pytest.raises(DatabaseClosed, match="closed; make a new one"):
            await call
    with pytest.raises(DatabaseClosed):
        async with db.connection():
            pass
    assert await db.ping() is False  # never raises
    await sessions_become(db_url, 0)


async def test_closing_waits_for_checked_out_connections_then_cuts_them(db_url: str) -> None:
    metrics = Recorded()
    db = Database(Settings(database_url=db_url, db_pool_min_size=1), metrics=metrics)
    async with db.connection() as conn:
        started = time.monotonic()
        await db.close(grace_s=0.2)  # the borrowed connection does not come back in time
        assert time.monotonic() - started < HANG_GUARD_S
        assert conn.closed
    assert (metrics.size, metrics.in_use) == (0, 0)
    await sessions_become(db_url, 0)


async def test_closing_during_the_first_connect_keeps_no_pool(db_url: str) -> None:
    db = Database(Settings(database_url=db_url))
    first = asyncio.ensure_future(db.fetchone("SELECT 1"))
    await asyncio.sleep(0)  # one scheduling step (not a wait): the task starts connecting
    await db.close()
    with pytest.raises(DatabaseClosed):
        await first
    await sessions_become(db_url, 0)


def test_a_database_belongs_to_the_loop_of_its_pool() -> None:
    url = fresh_url()
    ensure_database(url)
    metrics = Recorded()
    db = Database(Settings(database_url=url, db_pool_min_size=2), metrics=metrics)
    try:
        assert asyncio.run(db.fetchone("SELECT 1")) == (1,)  # that loop ends, the pool stays
        with pytest.raises(RuntimeError, match="make one Database per event loop"):
            asyncio.run(db.fetchone("SELECT 1"))
        assert asyncio.run(db.ping()) is False
        # close() from another loop works once the pool's loop has finished.
        asyncio.run(db.close())
        assert db.closed
        assert (metrics.size, metrics.in_use) == (0, 0)
        poll_until(lambda: sessions(url) == 0, timeout_s=10, what="the old loop's sessions to end")
    finally:
        drop_database(url)


async def test_a_database_refuses_to_close_from_another_running_loop(db: Database) -> None:
    assert await db.fetchone("SELECT 1") == (1,)

    def close_elsewhere() -> None:
        asyncio.run(db.close())  # a second loop, in a thread, while the pool's loop runs

    with pytest.raises(RuntimeError, match="still running"):
        await asyncio.to_thread(close_elsewhere)
    assert not db.closed
    assert await db.fetchone("SELECT 2") == (2,)


async def test_a_forked_child_neither_uses_nor_closes_the_parents_pool(db_url: str) -> None:
    settings = Settings(database_url=db_url, db_pool_min_size=1, db_pool_max_size=1)
    async with Database(settings) as db:
        row = await db.fetchone("SELECT pg_backend_pid()")
        assert row is not None
        backend_before = row[0]
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status, never return into pytest
            code = 1
            try:

                async def child() -> int:
                    try:
                        await db.fetchone("SELECT 1")
                    except RuntimeError as exc:
                        if "forked" not in str(exc):
                            return 2
                    else:
                        return 3
                    await db.close()  # leaves the inherited pool alone
                    return 0 if db.closed else 4

                code = asyncio.run(child())
            finally:
                os._exit(code)
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's session survived the child: the same backend still answers.
        assert await db.fetchone("SELECT pg_backend_pid()") == (backend_before,)
        assert backend_pids(db_url) == {backend_before}
