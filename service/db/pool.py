"""One aiopg pool per process and event loop, created lazily, failing fast when Postgres is down.

Pools are made on first use inside the running loop, so a supervisor can fork its workers before
any connection exists. Each pool is keyed by the settings that shape it; production has one.
When the running loop changes (each test has its own) the pools of the old loop are dropped and
new ones are made. A pool whose creation failed is not kept: the next call tries again, so the
service recovers by itself once Postgres is back. aiopg notices connections the server closed
(its reader callback sees the EOF) and drops them on the next acquire; a statement that meets a
connection which died unnoticed is retried once on a new one (see ``_run``).

Every wait is bounded: connecting by ``db_connect_timeout_s`` (aiopg's timeout and libpq's
``connect_timeout``), acquiring by ``db_acquire_timeout_s``, a query by ``operation_timeout_s``.
When one runs out, or the server cannot be reached, the helpers raise ``DatabaseUnavailable``.
Errors in the SQL itself (syntax, constraints) are our bugs and pass through as psycopg2 errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiopg
import psycopg2

from service.metrics import DB_POOL_IN_USE, DB_POOL_SIZE, DB_QUERY_DURATION
from service.settings import Settings

Params = Sequence[Any]


class DatabaseUnavailable(Exception):
    """Postgres cannot serve us now: unreachable, too slow, or the connection broke."""


def describe(exc: BaseException) -> str:
    """First line of a driver error, for messages and logs (psycopg2 messages span lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclasses.dataclass(frozen=True, slots=True)
class _PoolKey:
    dsn: str
    min_size: int
    max_size: int
    connect_timeout_s: float
    acquire_timeout_s: float

    @classmethod
    def of(cls, settings: Settings) -> _PoolKey:
        return cls(
            dsn=settings.database_url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            connect_timeout_s=settings.db_connect_timeout_s,
            acquire_timeout_s=settings.db_acquire_timeout_s,
        )


@dataclasses.dataclass(slots=True)
class _Entry:
    """A pool, the gauge values last reported for it (we report deltas, so pools add up), and
    the connections that have run a statement before (so a failure on one means it went stale)."""

    pool: aiopg.Pool
    size: int = 0
    in_use: int = 0
    proven: weakref.WeakSet[aiopg.Connection] = dataclasses.field(default_factory=weakref.WeakSet)

    def report(self) -> None:
        size = self.pool.size
        in_use = size - self.pool.freesize
        DB_POOL_SIZE.inc(size - self.size)
        DB_POOL_IN_USE.inc(in_use - self.in_use)
        self.size, self.in_use = size, in_use

    def forget(self) -> None:
        """Take this pool's connections out of the gauges."""
        DB_POOL_SIZE.dec(self.size)
        DB_POOL_IN_USE.dec(self.in_use)
        self.size = self.in_use = 0


@dataclasses.dataclass(slots=True)
class _LoopPools:
    loop: asyncio.AbstractEventLoop
    pid: int
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    entries: dict[_PoolKey, _Entry] = dataclasses.field(default_factory=dict)


_current: _LoopPools | None = None
# Pools inherited through fork(): never touched again, and kept referenced so that their
# finalizers do not close sockets the parent process still uses.
_inherited: list[_LoopPools] = []


def _abandon(state: _LoopPools) -> None:
    """Drop the pools of a loop that is gone, closing their sockets without that loop."""
    for entry in state.entries.values():
        entry.forget()
        pool = entry.pool
        # aiopg has no synchronous way to close idle connections, hence the private deque.
        conns = [*pool._free, *pool._used]
        pool._free.clear()
        pool._used.clear()
        pool.close()
        for conn in conns:
            # Connection.close() unregisters the fd from its loop, then closes the socket; if the
            # loop refuses, close the socket anyway.
            with contextlib.suppress(Exception):
                conn.close()
            with contextlib.suppress(Exception):
                conn.raw.close()
    state.entries.clear()


def _state() -> _LoopPools:
    global _current
    loop = asyncio.get_running_loop()
    pid = os.getpid()
    if _current is not None and (_current.loop is not loop or _current.pid != pid):
        if _current.pid != pid:
            _inherited.append(_current)
        else:
            _abandon(_current)
        _current = None
    if _current is None:
        _current = _LoopPools(loop=loop, pid=pid)
    return _current


def libpq_connect_timeout(seconds: float) -> int:
    # libpq takes whole seconds and treats values below 2 as 2 (0 would mean "wait forever").
    return max(2, math.ceil(seconds))


async def _entry(settings: Settings) -> _Entry:
    state = _state()
    key = _PoolKey.of(settings)
    entry = state.entries.get(key)
    if entry is not None:
        return entry
    # The deadline covers waiting for the lock too: callers queued behind a slow attempt give up
    # with it rather than each starting a fresh wait of their own.
    try:
        async with asyncio.timeout(settings.db_connect_timeout_s), state.lock:
            entry = state.entries.get(key)
            if entry is not None:
                return entry
            pool = await aiopg.create_pool(
                key.dsn,
                minsize=key.min_size,
                maxsize=key.max_size,
                # aiopg bounds connecting and waiting for a free connection by this; our own
                # deadlines (connect, acquire) are the tighter ones.
                timeout=max(key.connect_timeout_s, key.acquire_timeout_s),
                connect_timeout=libpq_connect_timeout(key.connect_timeout_s),
                enable_hstore=False,
            )
    except TimeoutError:
        raise DatabaseUnavailable(
            f"database unavailable: no connection within {settings.db_connect_timeout_s} s"
        ) from None
    except psycopg2.Error as exc:
        raise DatabaseUnavailable(f"database unavailable: {describe(exc)}") from exc
    entry = _Entry(pool)
    entry.report()
    state.entries[key] = entry
    return entry


async def get_pool(settings: Settings) -> aiopg.Pool:
    """This process's pool for ``settings`` in the running loop, created on first use.

    Raises ``DatabaseUnavailable`` when the pool cannot be filled to its minimum size in time;
    nothing is cached then, so the next call tries again.
    """
    return (await _entry(settings)).pool


async def close_pool(grace_s: float = 5.0) -> None:
    """Close every pool of this process: let checked-out connections finish for ``grace_s``,
    then close them anyway. Pools of another loop or a parent process are just dropped."""
    global _current
    state, _current = _current, None
    if state is None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not state.loop or state.pid != os.getpid():
        if state.pid == os.getpid():
            _abandon(state)
        else:
            _inherited.append(state)
        return
    for entry in state.entries.values():
        entry.pool.close()
        try:
            async with asyncio.timeout(grace_s):
                await entry.pool.wait_closed()
        except TimeoutError:
            entry.pool.terminate()
            await entry.pool.wait_closed()
        entry.forget()
    state.entries.clear()


async def _checkout(settings: Settings) -> tuple[_Entry, aiopg.Connection]:
    entry = await _entry(settings)
    try:
        async with asyncio.timeout(settings.db_acquire_timeout_s):
            while True:
                try:
                    return entry, await entry.pool.acquire()
                except AssertionError:
                    # aiopg asserts that the free connection it hands out is open, but one can
                    # die while it awaits a new connection; it has dropped the dead one: retry.
                    continue
    except TimeoutError:
        raise DatabaseUnavailable(
            f"database unavailable: no free connection within {settings.db_acquire_timeout_s} s"
        ) from None
    except psycopg2.Error as exc:
        raise DatabaseUnavailable(f"database unavailable: {describe(exc)}") from exc
    finally:
        entry.report()


async def _checkin(entry: _Entry, conn: aiopg.Connection) -> None:
    try:
        await entry.pool.release(conn)
    finally:
        entry.report()


@contextlib.asynccontextmanager
async def connection(settings: Settings) -> AsyncIterator[aiopg.Connection]:
    """Check out a connection for several statements (aiopg connections autocommit).

    Raises ``DatabaseUnavailable`` if none can be had in time; errors inside the block are the
    caller's to handle.
    """
    entry, conn = await _checkout(settings)
    try:
        yield conn
    finally:
        await _checkin(entry, conn)


async def _run(settings: Settings, sql: str, params: Params, rows: bool) -> tuple[list[Any], int]:
    """Run one statement on a pooled connection.

    Idle pooled connections die when Postgres restarts or an admin ends them, and we may learn
    of it only when our statement gets the connection's end instead of an answer. When that
    happens on a connection that has served before, the pool's idle connections are dropped (they
    are likely dead too) and the statement is tried once more on a new connection. A session
    ended while idle never read our statement; the rare exception is a server crashing between
    running a statement and replying.
    """
    started = time.perf_counter()
    retried = False
    try:
        while True:
            entry, conn = await _checkout(settings)
            stale_candidate = conn in entry.proven
            try:
                async with conn.cursor(timeout=settings.operation_timeout_s) as cur:
                    await cur.execute(sql, params)
                    result = await cur.fetchall() if rows else []
                    entry.proven.add(conn)
                    return result, cur.rowcount
            except TimeoutError:
                raise DatabaseUnavailable(
                    f"database unavailable: query took over {settings.operation_timeout_s} s"
                ) from None
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                if stale_candidate and conn.closed and not retried:
                    retried = True
                    await entry.pool.clear()
                    continue
                raise DatabaseUnavailable(f"database unavailable: {describe(exc)}") from exc
            finally:
                await _checkin(entry, conn)
    finally:
        DB_QUERY_DURATION.observe(time.perf_counter() - started)


async def fetch(settings: Settings, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
    """Run one statement and return all its rows."""
    result, _ = await _run(settings, sql, params, rows=True)
    return result


async def fetchone(settings: Settings, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
    """Run one statement and return its first row, or None when it returned none."""
    result, _ = await _run(settings, sql, params, rows=True)
    return result[0] if result else None


async def execute(settings: Settings, sql: str, params: Params = ()) -> int:
    """Run one statement that returns no rows; return the number of rows it affected."""
    _, count = await _run(settings, sql, params, rows=False)
    return count


async def ping(settings: Settings, timeout_s: float = 1.0) -> bool:
    """True when ``SELECT 1`` succeeds within ``timeout_s`` (for /readyz); never raises."""
    try:
        async with asyncio.timeout(timeout_s):
            row = await fetchone(settings, "SELECT 1")
    except Exception:
        return False
    return row == (1,)
