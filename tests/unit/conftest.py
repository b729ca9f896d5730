"""Unit tests open no sockets: a guard that turns the rule into a failure.

``no_sockets`` is autouse for every module under ``tests/unit`` and refuses:

- a new socket of family ``AF_INET``, ``AF_INET6`` or ``AF_UNIX``, of any type (TCP, UDP, Unix
  stream or datagram), made through :class:`socket.socket`. All Python code that connects or
  listens does that: ``socket.create_connection``, ``http.client``, redis-py, ``websockets``,
  and the stdlib event loop's ``create_connection``/``create_server`` (so ``open_connection``,
  ``start_server`` and ``serve(..., run=False)``);
- ``psycopg2.connect``, and so aiopg and the ``db_url`` fixtures: libpq opens its socket in C,
  where the first check cannot see it.

Either raises ``AssertionError("unit tests open no sockets ...")``: a test that needs a socket
belongs in ``tests/server`` (or ``tests/adapters`` with a fake transport).

Allowed: wrapping a descriptor that already exists (``socket.socket(fileno=...)``). That is how
``socket.socketpair()`` and ``socket.fromfd()`` build their objects, and every asyncio event loop
makes a socketpair for its self-pipe (wake-ups, signals): pytest-asyncio's loops and
``asyncio.new_event_loop()`` keep working. The check sits on ``socket.socket.__init__`` rather
than on the module attribute, so ``isinstance`` and ``from socket import socket`` are unaffected.

Not seen: sockets other C code opens without Python's ``socket`` module (uvloop, i.e.
``serve(..., run=True)``). The guard is module-scoped, so it also covers module-scoped fixtures;
a session-scoped fixture set up by a unit test first would run before it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

REFUSED_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6, socket.AF_UNIX})
MESSAGE = "unit tests open no sockets"
_socket_init = socket.socket.__init__


def _guarded_socket_init(
    self: socket.socket,
    family: int = -1,
    type: int = -1,
    proto: int = -1,
    fileno: int | None = None,
) -> None:
    if fileno is None:  # a new socket, not an existing descriptor (socketpair, fromfd)
        chosen = socket.AF_INET if family == -1 else family  # socket.socket's own default
        if chosen in REFUSED_FAMILIES:
            kind = socket.SOCK_STREAM if type == -1 else type
            raise AssertionError(
                f"{MESSAGE}: socket({socket.AddressFamily(chosen).name}, "
                f"{socket.SocketKind(kind).name}); move the test to tests/server"
            )
    _socket_init(self, family, type, proto, fileno)


def _refused_connect(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"{MESSAGE}: psycopg2.connect; move the test to tests/server")


@pytest.fixture(autouse=True, scope="module")
def no_sockets() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "__init__", _guarded_socket_init)
        patch.setattr(psycopg2, "connect", _refused_connect)
        yield
