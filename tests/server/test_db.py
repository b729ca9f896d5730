"""service.db against a real Postgres: migrations, the pool, failing fast, recovering."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import aiopg
import psycopg2
import pytest
from prometheus_client import REGISTRY

from service.db import (
    DatabaseUnavailable,
    close_pool,
    connection,
    ensure_database,
    execute,
    fetch,
    fetchone,
    get_pool,
    migrate,
    migrate_sync,
    ping,
)
from service.db.migrations import MIGRATIONS
from service.settings import Settings
from support.dbutil import (
    TcpProxy,
    database_exists,
    database_name,
    drop_database,
    fresh_url,
    unused_port,
    url_for,
)

ALL_VERSIONS = [str(version) for version in range(1, len(MIGRATIONS) + 1)]
# A hang guard, not a performance target: failing "fast" means well under this.
HANG_GUARD_S = 5.0


def fast_settings(url: str, **overrides: float) -> Settings:
    values = {"db_connect_timeout_s": 1.0, "db_acquire_timeout_s": 1.0, **overrides}
    return Settings(database_url=url, **values)  # type: ignore[arg-type]


def gauge(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
async def pools_closed() -> AsyncIterator[None]:
    """Close whatever pools the test made, so none outlives its event loop."""
    yield
    await close_pool()


# --- migrations -------------------------------------------------------------------------------


async def test_migrate_applies_everything_once_then_nothing(blank_db_url: str) -> None:
    assert await migrate(blank_db_url) == ALL_VERSIONS
    assert await migrate(blank_db_url) == []
    rows = await fetch(
        Settings(database_url=blank_db_url), "SELECT version FROM schema_migrations ORDER BY 1"
    )
    assert [str(version) for (version,) in rows] == ALL_VERSIONS
    await close_pool()


async def test_concurrent_migrations_apply_each_version_once(blank_db_url: str) -> None:
    results = await asyncio.gather(*(migrate(blank_db_url) for _ in range(3)))
    assert sorted(version for applied in results for version in applied) == ALL_VERSIONS
    rows = await fetch(
        Settings(database_url=blank_db_url),
        "SELECT count(*), count(DISTINCT version) FROM schema_migrations",
    )
    assert rows == [(len(MIGRATIONS), len(MIGRATIONS))]


async def test_migrations_create_the_tables_and_index(db_url: str) -> None:
    settings = Settings(database_url=db_url)
    tables = await fetch(
        settings,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    assert tables == [("chat_messages",), ("notes",), ("schema_migrations",)]
    index = await fetchone(
        settings, "SELECT indexdef FROM pg_indexes WHERE indexname = 'chat_messages_chatroom_id'"
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


# --- the pool ---------------------------------------------------------------------------------


async def test_fetch_fetchone_execute(db_url: str) -> None:
    settings = Settings(database_url=db_url)
    queries_before = gauge("graphql_db_query_duration_seconds_count")
    assert await execute(settings, "CREATE TABLE t (n int)") == -1
    assert await execute(settings, "INSERT INTO t VALUES (1), (2), (3)") == 3
    assert await fetch(settings, "SELECT n FROM t WHERE n > %s ORDER BY n", (1,)) == [(2,), (3,)]
    assert await fetchone(settings, "SELECT n FROM t ORDER BY n") == (1,)
    assert await fetchone(settings, "SELECT n FROM t WHERE n > 5") is None
    assert gauge("graphql_db_query_duration_seconds_count") == queries_before + 5


def test_a_new_event_loop_gets_a_new_pool() -> None:
    url = fresh_url()
    ensure_database(url)
    settings = Settings(database_url=url)
    size_before = gauge("graphql_db_pool_size")

    async def query() -> aiopg.Pool:
        assert await fetchone(settings, "SELECT 1") == (1,)
        return await get_pool(settings)

    try:
        first = asyncio.run(query())  # that loop closes with its pool still open
        second = asyncio.run(query())  # the stale pool is dropped and its sockets closed
        assert second is not first
        assert first.size == 0
        assert gauge("graphql_db_pool_size") == size_before + second.size
        asyncio.run(close_pool())
        assert gauge("graphql_db_pool_size") == size_before
    finally:
        drop_database(url)


async def test_one_pool_per_loop_and_settings(db_url: str) -> None:
    settings = Settings(database_url=db_url)
    pools = await asyncio.gather(*(get_pool(settings) for _ in range(5)))
    assert all(pool is pools[0] for pool in pools)
    assert await get_pool(Settings(database_url=db_url)) is pools[0]
    other = await get_pool(Settings(database_url=db_url, db_pool_max_size=3))
    assert other is not pools[0]


async def test_sql_errors_pass_through_and_release_the_connection(db_url: str) -> None:
    settings = Settings(database_url=db_url, db_pool_min_size=0, db_pool_max_size=1)
    with pytest.raises(psycopg2.errors.UndefinedTable):
        await fetch(settings, "SELECT * FROM no_such_table")
    # The only connection went back to the pool: the next query gets it.
    assert await fetchone(settings, "SELECT 1") == (1,)
    pool = await get_pool(settings)
    assert pool.size - pool.freesize == 0


async def test_gauges_follow_the_pools(db_url: str) -> None:
    size_before = gauge("graphql_db_pool_size")
    in_use_before = gauge("graphql_db_pool_in_use")
    settings = Settings(database_url=db_url, db_pool_min_size=1, db_pool_max_size=4)
    pool = await get_pool(settings)
    assert gauge("graphql_db_pool_size") == size_before + 1
    async with connection(settings), connection(settings):
        assert gauge("graphql_db_pool_size") == size_before + 2
        assert gauge("graphql_db_pool_in_use") == in_use_before + 2
    assert pool.size == 2
    assert gauge("graphql_db_pool_size") == size_before + 2
    assert gauge("graphql_db_pool_in_use") == in_use_before
    await close_pool()
    assert gauge("graphql_db_pool_size") == size_before
    assert gauge("graphql_db_pool_in_use") == in_use_before


async def test_acquire_times_out_when_the_pool_is_exhausted(db_url: str) -> None:
    settings = fast_settings(db_url, db_pool_max_size=1, db_acquire_timeout_s=0.2)
    async with connection(settings):
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match=r"^database unavailable: no free connection"):
            await fetchone(settings, "SELECT 1")
        assert time.monotonic() - started < HANG_GUARD_S
    assert await fetchone(settings, "SELECT 1") == (1,)


async def test_a_dead_port_fails_fast_every_time(pools_closed: None) -> None:
    settings = fast_settings(f"postgresql://postgres@127.0.0.1:{unused_port()}/nothing")
    for _ in range(2):  # the failed pool is not cached: each call tries again, and fails fast
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match=r"^database unavailable: "):
            await fetch(settings, "SELECT 1")
        assert time.monotonic() - started < HANG_GUARD_S


async def test_a_server_that_never_answers_times_out(pools_closed: None) -> None:
    # Accepts TCP connections (the kernel completes the handshake) but never speaks.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        settings = fast_settings(f"postgresql://postgres@127.0.0.1:{port}/nothing")
        started = time.monotonic()
        # Concurrent callers share the connect deadline; they do not queue up one after another.
        results = await asyncio.gather(
            *(fetchone(settings, "SELECT 1") for _ in range(5)), return_exceptions=True
        )
        assert time.monotonic() - started < HANG_GUARD_S
        for result in results:
            assert isinstance(result, DatabaseUnavailable)
            assert str(result).startswith("database unavailable: no connection within 1.0 s")
        assert await ping(settings, timeout_s=0.3) is False


async def test_a_pool_that_failed_to_start_is_retried() -> None:
    url = fresh_url()  # this database does not exist yet, so the first pool cannot connect
    settings = fast_settings(url)
    try:
        with pytest.raises(DatabaseUnavailable, match="does not exist"):
            await fetchone(settings, "SELECT 1")
        ensure_database(url)
        assert await fetchone(settings, "SELECT 1") == (1,)
    finally:
        await close_pool()
        drop_database(url)


async def test_pool_recovers_after_its_backends_are_terminated(db_url: str) -> None:
    settings = Settings(database_url=db_url, db_pool_min_size=2, db_pool_max_size=2)
    pool = await get_pool(settings)
    async with aiopg.connect(url_for("postgres")) as admin, admin.cursor() as cur:
        for _ in range(5):
            # Both connections serve a statement, then the server ends them while idle...
            assert await asyncio.gather(
                fetchone(settings, "SELECT 1"), fetchone(settings, "SELECT 2")
            ) == [(1,), (2,)]
            assert pool.size == 2
            await cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                (database_name(db_url),),
            )
            assert await cur.fetchone() == (2,)
            # ...and the very next statement succeeds, whether or not we saw them go yet.
            assert await fetchone(settings, "SELECT 3") == (3,)


async def test_outage_fails_fast_then_recovers(db_url: str) -> None:
    proxy = TcpProxy()
    await proxy.start()
    try:
        settings = fast_settings(proxy.url(database_name(db_url)))
        assert await fetchone(settings, "SELECT 1") == (1,)

        await proxy.stop()  # Postgres "goes down"
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match=r"^database unavailable: "):
                await fetchone(settings, "SELECT 1")
            assert time.monotonic() - started < HANG_GUARD_S
        assert await ping(settings) is False

        await proxy.start()  # and comes back on the same address
        assert await fetchone(settings, "SELECT 1") == (1,)
        assert await ping(settings) is True
    finally:
        await close_pool()
        await proxy.stop()


async def test_ping(db_url: str, pools_closed: None) -> None:
    assert await ping(Settings(database_url=db_url)) is True
    dead = fast_settings(f"postgresql://postgres@127.0.0.1:{unused_port()}/nothing")
    started = time.monotonic()
    assert await ping(dead) is False
    assert time.monotonic() - started < HANG_GUARD_S
