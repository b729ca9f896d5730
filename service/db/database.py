"""``Database``: one lazily created aiopg pool, failing fast when Postgres is down.

Make one ``Database(settings)`` per worker (``build_worker_server`` does) and hand it to the code
that needs it (the example schema finds it in the GraphQL context under ``"db"``). The pool is
created on first use inside the running event loop, so a supervisor can build and fork its
workers before any connection exists. A pool whose creation failed is not kept: the next call
tries again, so the service recovers by itself once Postgres is back. aiopg notices connections
the server closed (its reader callback sees the EOF) and drops them on the next acquire; a
statement that meets a connection which died unnoticed is retried once on a new one (see
``Database._run``).

Every wait is bounded: connecting by ``db_connect_timeout_s`` (aiopg's timeout and libpq's
``connect_timeout``), acquiring by ``db_acquire_timeout_s``, a query by ``operation_timeout_s``.
When one runs out, or the server cannot be reached, the methods raise ``DatabaseUnavailable``
(message ``"database unavailable: <reason>"``). Errors in the SQL itself (syntax, constraints)
are our bugs and pass through as psycopg2 errors.

Event loop and process: a pool's sockets are registered with the loop that made them and are
shared with any process forked after they were opened. So a ``Database`` belongs to the loop and
process in which its pool was created:

- Used from another event loop it raises ``RuntimeError`` (make one ``Database`` per loop; in
  tests, one per test). ``close()`` is the exception: from another loop it still closes the pool
  when the pool's own loop no longer runs (a finished test's loop), so nothing leaks.
- Used in a forked child it raises ``RuntimeError`` and never touches the pool: closing its
  connections would end the parent's sessions (libpq says goodbye on the shared socket). The
  object keeps referring to the pool, so the driver's finalizers do not run while it lives; make
  the ``Database`` after forking (as the workers do), not before.
- Until a pool exists (never used, or its creation failed) nothing ties it to a loop or process.

After ``close()`` it stays closed: every method raises ``DatabaseClosed``, except ``ping``
(False) and ``close`` (nothing to do).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Protocol

import aiopg
import psycopg2

from service.settings import Settings

Params = Sequence[Any]


class DatabaseUnavailable(Exception):
    """Postgres cannot serve us now: unreachable, too slow, or the connection broke."""


class DatabaseClosed(RuntimeError):
    """The ``Database`` was closed; it does not reopen (make a new one)."""


class DatabaseMetrics(Protocol):
    """Where a ``Database`` reports its pool and its statements (``None``: nowhere).

    Sizes are reported as deltas, so that several pools in one process add up in one gauge.
    """

    def pool_changed(self, size_delta: int, in_use_delta: int) -> None:
        """The pool's connections (open ones, and those checked out) changed by these deltas."""

    def query_observed(self, seconds: float) -> None:
        """One statement took ``seconds``, waiting for a connection included."""


def describe(exc: BaseException) -> str:
    """First line of a driver error, for messages and logs (psycopg2 messages span lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unavailable(reason: str | BaseException) -> DatabaseUnavailable:
    """``DatabaseUnavailable("database unavailable: <reason>")``; a driver error is described
    by its first line. The one place that words the error (the pool and the migrations)."""
    text = reason if isinstance(reason, str) else describe(reason)
    return DatabaseUnavailable(f"database unavailable: {text}")


def broken_connection(exc: RuntimeError) -> bool:
    """Whether ``exc`` is the event loop refusing a connection's closed socket: aiopg 1.4
    registers a new or broken connection's descriptor with the loop, and uvloop raises
    ``RuntimeError("unable to perform operation on <UVPoll closed=True>; the handler is
    closed")`` (asyncio: "... on <TCPTransport closed=True>") when the server went away
    meanwhile. That is Postgres being unavailable, not our bug."""
    text = str(exc)
    return "unable to perform operation on" in text and "closed" in text


@contextlib.contextmanager
def driver_errors(deadline: str) -> Iterator[None]:
    """Turn the errors of connecting, acquiring or running a statement into
    ``DatabaseUnavailable``: a ``TimeoutError`` becomes ``deadline`` (what ran out, e.g. "no
    connection within 2.0 s"), a psycopg2 error or a broken connection's ``RuntimeError`` (see
    ``broken_connection``) its first line."""
    try:
        yield
    except TimeoutError:
        raise unavailable(deadline) from None
    except psycopg2.Error as exc:
        raise unavailable(exc) from exc
    except RuntimeError as exc:
        if not broken_connection(exc):
            raise
        raise unavailable(exc) from exc


def libpq_connect_timeout(seconds: float) -> int:
    # libpq takes whole seconds and treats values below 2 as 2 (0 would mean "wait forever").
    return max(2, math.ceil(seconds))


class Transaction:
    """Statements inside ``Database.transaction()``; see there."""

    def __init__(self, conn: aiopg.Connection, timeout_s: float) -> None:
        self.conn = conn
        self.timeout_s = timeout_s

    async def _run(self, sql: str, params: Params, rows: bool) -> tuple[list[Any], int]:
        """Like ``Database``'s statements (errors in the SQL itself pass through as psycopg2
        errors), minus the stale-connection retry: a transaction cannot move connections."""
        try:
            async with self.conn.cursor(timeout=self.timeout_s) as cur:
                await cur.execute(sql, params)
                return (await cur.fetchall() if rows else []), cur.rowcount
        except TimeoutError:
            raise unavailable(f"query took over {self.timeout_s} s") from None
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise unavailable(exc) from exc
        except RuntimeError as exc:
            if not broken_connection(exc):
                raise
            raise unavailable(exc) from exc

    async def fetch(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        return (await self._run(sql, params, rows=True))[0]

    async def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        result = (await self._run(sql, params, rows=True))[0]
        return result[0] if result else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        return (await self._run(sql, params, rows=False))[1]


class Database:
    """Postgres for ``settings`` (``database_url``, ``db_pool_min_size``/``max_size``, the
    ``db_*_timeout_s`` and ``operation_timeout_s`` deadlines) through one aiopg pool, created
    on first use. ``metrics`` receives pool sizes and statement durations.

    ``fetch``/``fetchone``/``execute`` run one statement each on a pooled connection (aiopg
    connections autocommit); ``connection()`` lends one for several. ``params`` are psycopg2's
    (``%s`` placeholders). ``async with Database(settings) as db:`` closes it on the way out.
    """

    def __init__(self, settings: Settings, *, metrics: DatabaseMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self._pool: aiopg.Pool | None = None
        # Where the pool lives; set when a pool is created, and only then.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Gauge values last reported (we report deltas).
        self._size = 0
        self._in_use = 0
        # Connections that have run a statement before: a failure on one means it went stale.
        self._proven: weakref.WeakSet[aiopg.Connection] = weakref.WeakSet()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._pool is not None else "unopened"
        return f"<Database {state} pid={self._pid}>"

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- the pool ------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        """Raise unless this process and the running loop may use the pool (see the module)."""
        if self._closed:
            raise DatabaseClosed("this Database was closed; make a new one")
        if self._pool is None:
            return
        pid = os.getpid()
        if self._pid != pid:
            raise RuntimeError(
                f"this Database opened its pool in process {self._pid}, and this is process "
                f"{pid} (forked): make a new Database after forking; the inherited pool is "
                "left untouched, its connections belong to the parent"
            )
        if self._loop is not asyncio.get_running_loop():
            raise RuntimeError(
                "this Database belongs to the event loop it created its pool on, not the "
                "running one: make one Database per event loop (close() the old one)"
            )

    def _creation_lock(self) -> asyncio.Lock:
        # An asyncio.Lock binds to the loop that first waits on it; with no pool yet the
        # Database may be used from a new loop, which then gets a new lock.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _get_pool(self) -> aiopg.Pool:
        """The pool, created on first use; ``DatabaseUnavailable`` when it cannot be filled to
        its minimum size in time (nothing is kept then: the next call tries again)."""
        self._check_usable()
        if self._pool is not None:
            return self._pool
        settings = self.settings
        # The deadline covers waiting for the lock too: callers queued behind a slow attempt
        # give up with it rather than each starting a fresh wait of their own.
        with driver_errors(f"no connection within {settings.db_connect_timeout_s} s"):
            async with asyncio.timeout(settings.db_connect_timeout_s), self._creation_lock():
                self._check_usable()
                if self._pool is not None:
                    return self._pool
                pool = await aiopg.create_pool(
                    settings.database_url,
                    minsize=settings.db_pool_min_size,
                    maxsize=settings.db_pool_max_size,
                    # aiopg bounds connecting and waiting for a free connection by this; our
                    # own deadlines (connect, acquire) are the tighter ones.
                    timeout=max(settings.db_connect_timeout_s, settings.db_acquire_timeout_s),
                    connect_timeout=libpq_connect_timeout(settings.db_connect_timeout_s),
                    enable_hstore=False,
                )
                if not self._closed:
                    self._loop, self._pid = asyncio.get_running_loop(), os.getpid()
                    self._pool = pool
                    self._report()
                    return pool
        # close() ran while we were connecting: the new pool goes too.
        pool.terminate()
        await pool.wait_closed()
        raise DatabaseClosed("this Database was closed; make a new one")

    def _report(self) -> None:
        """Send the pool's size and connections in use, as deltas, to ``metrics``."""
        pool = self._pool
        size, in_use = (pool.size, pool.size - pool.freesize) if pool is not None else (0, 0)
        if self.metrics is not None and (size, in_use) != (self._size, self._in_use):
            self.metrics.pool_changed(size - self._size, in_use - self._in_use)
        self._size, self._in_use = size, in_use

    async def close(self, grace_s: float = 5.0) -> None:
        """Close the pool: let checked-out connections finish for ``grace_s`` seconds, then
        close them anyway. The ``Database`` stays closed (``DatabaseClosed`` on use).

        From another event loop it closes the pool only if the pool's loop no longer runs
        (``RuntimeError`` otherwise); in a forked child it leaves the inherited pool alone.
        Idempotent.
        """
        pool = self._pool
        if pool is None or self._pid != os.getpid():
            # Nothing to close, or the parent's pool: never touched here, and still referenced
            # by self._pool so that its connections' finalizers do not run.
            self._closed = True
            return
        running = asyncio.get_running_loop()
        assert self._loop is not None
        if running is not self._loop and self._loop.is_running():
            raise RuntimeError(
                "this Database's pool belongs to an event loop that is still running: close it "
                "from that loop"
            )
        self._closed = True
        self._pool = None
        try:
            if running is self._loop:
                pool.close()
                try:
                    async with asyncio.timeout(grace_s):
                        await pool.wait_closed()
                except TimeoutError:
                    pool.terminate()
                    await pool.wait_closed()
                await pool.clear()  # a connection that a fill was opening as it closed
            else:
                # The pool's loop has finished: close its sockets without waiting on it.
                # terminate() closes the checked-out connections, clear() the idle ones (their
                # futures are already done, so awaiting them here does not need that loop).
                pool.terminate()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(grace_s):
                        await pool.clear()
        finally:
            self._report()

    # --- statements ----------------------------------------------------------------------------

    async def _checkout(self) -> tuple[aiopg.Pool, aiopg.Connection]:
        pool = await self._get_pool()
        timeout_s = self.settings.db_acquire_timeout_s
        try:
            with driver_errors(f"no free connection within {timeout_s} s"):
                async with asyncio.timeout(timeout_s):
                    while True:
                        try:
                            return pool, await pool.acquire()
                        except AssertionError:
                            # aiopg 1.4.0, Pool._acquire: it drops closed idle connections,
                            # may then await a new connection, and asserts that the idle one
                            # it pops afterwards is open; one that died during that await
                            # fails the assert (already popped, so dropped): try again.
                            continue
        finally:
            self._report()

    async def _checkin(self, pool: aiopg.Pool, conn: aiopg.Connection) -> None:
        try:
            await pool.release(conn)
        finally:
            self._report()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One transaction on one pooled connection: ``BEGIN`` on entry, ``COMMIT`` when the
        block ends, ``ROLLBACK`` when it raises. Statements inside run through the yielded
        ``Transaction`` (``fetch``, ``fetchone``, ``execute``), each bounded by
        ``operation_timeout_s``; a lost connection or a timeout raises ``DatabaseUnavailable``
        and nothing is committed."""
        pool, conn = await self._checkout()
        tx = Transaction(conn, self.settings.operation_timeout_s)
        try:
            await tx.execute("BEGIN")
            try:
                yield tx
            except BaseException:
                with contextlib.suppress(Exception):
                    await tx.execute("ROLLBACK")
                raise
            await tx.execute("COMMIT")
        finally:
            with driver_errors("the connection could not be returned"):
                await self._checkin(pool, conn)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[aiopg.Connection]:
        """Check out a connection for several statements (aiopg connections autocommit).

        Raises ``DatabaseUnavailable`` if none can be had in time; errors inside the block are
        the caller's to handle. Bound each statement with ``conn.cursor(timeout=seconds)``;
        aiopg's default is the pool's timeout (the larger of the connect and acquire timeouts).
        """
        pool, conn = await self._checkout()
        try:
            yield conn
        finally:
            await self._checkin(pool, conn)

    async def _run(self, sql: str, params: Params, rows: bool) -> tuple[list[Any], int]:
        """Run one statement on a pooled connection; return its rows (when ``rows``) and its
        row count.

        Idle pooled connections die when Postgres restarts or an admin ends them, and we may
        learn of it only when our statement gets the connection's end instead of an answer.
        When that happens on a connection that has served before, the pool's idle connections
        are dropped (they are likely dead too) and the statement is tried once more on a new
        connection. A session ended while idle never read our statement; the rare exception is
        a server crashing between running a statement and replying.
        """
        started = time.perf_counter()
        timeout_s = self.settings.operation_timeout_s
        retried = False
        try:
            while True:
                pool, conn = await self._checkout()
                stale_candidate = conn in self._proven
                try:
                    async with conn.cursor(timeout=timeout_s) as cur:
                        await cur.execute(sql, params)
                        result = await cur.fetchall() if rows else []
                        self._proven.add(conn)
                        return result, cur.rowcount
                except TimeoutError:
                    raise unavailable(f"query took over {timeout_s} s") from None
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    if stale_candidate and conn.closed and not retried:
                        retried = True
                        await pool.clear()
                        continue
                    raise unavailable(exc) from exc
                except RuntimeError as exc:
                    if not broken_connection(exc):
                        raise
                    raise unavailable(exc) from exc
                finally:
                    with driver_errors("the connection could not be returned"):
                        await self._checkin(pool, conn)
        finally:
            if self.metrics is not None:
                self.metrics.query_observed(time.perf_counter() - started)

    async def fetch(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return all its rows (tuples in column order)."""
        result, _ = await self._run(sql, params, rows=True)
        return result

    async def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        """Run one statement and return its first row, or None when it returned none."""
        result, _ = await self._run(sql, params, rows=True)
        return result[0] if result else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement that returns no rows; return the number of rows it affected
        (-1 for statements without a count, e.g. DDL)."""
        _, count = await self._run(sql, params, rows=False)
        return count

    async def ping(self, timeout_s: float = 1.0) -> bool:
        """True when ``SELECT 1`` succeeds within ``timeout_s`` seconds (for /readyz); False
        otherwise, closed or unusable here included. Never raises."""
        try:
            async with asyncio.timeout(timeout_s):
                row = await self.fetchone("SELECT 1")
        except Exception:
            return False
        return row == (1,)
