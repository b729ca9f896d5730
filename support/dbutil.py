"""Throwaway Postgres databases for tests, and a TCP proxy that can play "Postgres went away".

``tests/conftest.py`` makes its fixtures (``db_url``, ``blank_db_url``) available to every test.

The server is ``TEST_POSTGRES_URL`` (default: trust auth as ``postgres`` on 127.0.0.1:5432).
Each database is named ``gs_test_<random hex>``, created for one test and dropped after it
(``WITH (FORCE)``), so no test sees another's rows or leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import urllib.parse
from collections.abc import AsyncIterator

import psycopg2
import pytest
from psycopg2 import sql

from service.db import ensure_database, migrate

SERVER_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def url_for(database: str, server_url: str = SERVER_URL) -> str:
    """``server_url`` with its database replaced by ``database``."""
    return urllib.parse.urlsplit(server_url)._replace(path="/" + database).geturl()


def fresh_url() -> str:
    """The URL of a database that does not exist yet (not created)."""
    return url_for(f"gs_test_{secrets.token_hex(6)}")


def database_name(url: str) -> str:
    return urllib.parse.urlsplit(url).path.lstrip("/")


def admin_query(query: str | sql.Composable, params: tuple[object, ...] = ()) -> list[tuple]:
    """Run one statement on the server's ``postgres`` database, autocommit; return its rows."""
    conn = psycopg2.connect(url_for("postgres"), connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description is not None else []
    finally:
        conn.close()


def drop_database(url: str) -> None:
    admin_query(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(database_name(url))
        )
    )


def database_exists(url: str) -> bool:
    return bool(admin_query("SELECT 1 FROM pg_database WHERE datname = %s", (database_name(url),)))


@contextlib.asynccontextmanager
async def throwaway_database(*, migrated: bool = True) -> AsyncIterator[str]:
    """Create a database (migrated unless told not to), yield its URL, then drop it.

    Close the ``Database`` objects made for it before this exits: the drop (``WITH (FORCE)``)
    ends any session still open, and a pool left open would warn when collected.
    """
    url = fresh_url()
    assert ensure_database(url), "a fresh database name was already taken"
    try:
        if migrated:
            await migrate(url)
        yield url
    finally:
        drop_database(url)


@pytest.fixture
async def db_url() -> AsyncIterator[str]:
    """URL of a fresh, migrated database, dropped after the test."""
    async with throwaway_database() as url:
        yield url


@pytest.fixture
async def blank_db_url() -> AsyncIterator[str]:
    """URL of a fresh database with no tables, dropped after the test."""
    async with throwaway_database(migrated=False) as url:
        yield url


def unused_port() -> int:
    """A localhost TCP port nothing listens on (bound once by us, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TcpProxy:
    """Forwards a local port to Postgres; ``stop()`` is an outage, ``start()`` the recovery.

    The port stays the same across restarts, so a pool pointed at ``url_for(db, proxy.url)``
    sees the server vanish (open connections cut, new ones refused) and come back.
    """

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        parts = urllib.parse.urlsplit(SERVER_URL)
        self.target = (parts.hostname or target_host, parts.port or target_port)
        self.port = unused_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, database: str) -> str:
        parts = urllib.parse.urlsplit(SERVER_URL)
        netloc = f"{parts.username or 'postgres'}@127.0.0.1:{self.port}"
        return parts._replace(netloc=netloc, path="/" + database).geturl()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                end.transport.abort()
                self._writers.discard(end)
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
