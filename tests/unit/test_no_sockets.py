"""The guard in ``tests/unit/conftest.py``: unit tests cannot connect or listen, and event loops
(which need a socketpair) still run."""

from __future__ import annotations

import asyncio
import http.client
import socket

import psycopg2
import pytest

REFUSED = "unit tests open no sockets"


@pytest.mark.parametrize(
    ("family", "kind"),
    [
        (socket.AF_INET, socket.SOCK_STREAM),
        (socket.AF_INET6, socket.SOCK_STREAM),
        (socket.AF_INET, socket.SOCK_DGRAM),
        (socket.AF_UNIX, socket.SOCK_STREAM),
        (socket.AF_UNIX, socket.SOCK_DGRAM),
    ],
    ids=["tcp", "tcp6", "udp", "unix", "unix-datagram"],
)
def test_new_sockets_are_refused(family: int, kind: int) -> None:
    with pytest.raises(AssertionError, match=REFUSED):
        socket.socket(family, kind)


def test_default_socket_is_refused() -> None:
    with pytest.raises(AssertionError, match=r"socket\(AF_INET, SOCK_STREAM\)"):
        socket.socket()


def test_blocking_clients_are_refused() -> None:
    with pytest.raises(AssertionError, match=REFUSED):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    with pytest.raises(AssertionError, match=REFUSED):
        http.client.HTTPConnection("127.0.0.1", 9, timeout=1).request("GET", "/")
    with pytest.raises(AssertionError, match=REFUSED):
        psycopg2.connect("postgresql://postgres@127.0.0.1:9/postgres", connect_timeout=1)


async def test_an_event_loop_runs_but_cannot_connect_or_listen() -> None:
    await asyncio.sleep(0)
    with pytest.raises(AssertionError, match=REFUSED):
        await asyncio.open_connection("127.0.0.1", 9)
    with pytest.raises(AssertionError, match=REFUSED):
        await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)


def test_socketpair_and_new_event_loops_are_allowed() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"x")
        assert b.recv(1) == b"x"
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()
