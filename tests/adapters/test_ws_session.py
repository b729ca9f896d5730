"""``WSSession`` against fake transport callbacks and a fake clock: timers (initialisation
timeout, keep-alive, token expiry) fire when the test moves the clock, not after real waits, and
operations end however the connection ends."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import jwt
import pytest

from service.auth import issue_token
from service.broker import MemoryBroker
from service.engine.executor import Engine
from service.engine.http import HTTPRequest
from service.server.application import make_ws_authenticator
from service.server.ws_session import ConnectApp, WSSession
from service.settings import Settings
from service.subscriptions import Fanout
from support import schemas
from support.polling import apoll_until
from support.schemas import Ticker, schema
from tests.adapters.fakes import FakeClock

TWS = "graphql-transport-ws"
LEGACY = "graphql-ws"
START = {TWS: "subscribe", LEGACY: "start"}


class Peer:
    """The transport side: frames the session sent and the close it asked for."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def send_text(self, text: str) -> None:
        self.frames.append(json.loads(text))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def types(self) -> list[str]:
        return [frame["type"] for frame in self.frames]


@pytest.fixture
async def fanout() -> AsyncIterator[Fanout]:
    fanout = Fanout(MemoryBroker())
    await fanout.start()
    try:
        yield fanout
    finally:
        await fanout.close()


def open_session(
    subprotocol: str, authenticate: Any = None, **overrides: Any
) -> tuple[WSSession, Peer, FakeClock]:
    settings = Settings(redis_url="", **overrides)
    app = ConnectApp(Engine(schema, settings), settings, authenticate=authenticate)
    peer, clock = Peer(), FakeClock()
    request = HTTPRequest("GET", "/graphql", "", {}, b"", "test", "req-1")
    session = WSSession(
        app,
        subprotocol,
        request,
        peer.send_text,
        peer.close,
        loop=cast(asyncio.AbstractEventLoop, clock),
    )
    return session, peer, clock


async def acknowledged(session: WSSession, peer: Peer) -> None:
    session.receive_text(json.dumps({"type": "connection_init"}))
    await apoll_until(lambda: "connection_ack" in peer.types(), timeout_s=5, what="the ack")


@pytest.mark.parametrize("subprotocol", [TWS, LEGACY])
def test_initialisation_timeout_on_the_fake_clock(subprotocol: str) -> None:
    async def scenario() -> None:
        session, peer, clock = open_session(subprotocol, ws_init_timeout_s=3.0)
        clock.advance(2.9)
        assert peer.closed is None
        clock.advance(0.2)
        assert peer.closed == (4408, "Connection initialisation timeout")
        session.connection_lost()

    asyncio.run(scenario())


async def test_legacy_keepalive_on_the_fake_clock() -> None:
    session, peer, clock = open_session(LEGACY, ws_keepalive_s=12.0)
    await acknowledged(session, peer)
    assert peer.types() == ["connection_ack", "ka"]
    clock.advance(11.0)
    assert peer.types().count("ka") == 1
    clock.advance(1.5)
    assert peer.types().count("ka") == 2
    session.connection_lost()


@pytest.mark.parametrize("subprotocol", [TWS, LEGACY])
async def test_token_expiry_closes_at_exp_plus_leeway(subprotocol: str) -> None:
    """A real token, verified by the workers' authenticator, expires on a live socket."""
    settings = Settings(jwt_secret="s" * 32, jwt_leeway_s=5.0)
    token = issue_token(settings, sub="alice", ttl_s=10)
    ttl = jwt.decode(token, options={"verify_signature": False})["exp"] - time.time()
    session, peer, clock = open_session(
        subprotocol, make_ws_authenticator(settings), jwt_secret="s" * 32, jwt_leeway_s=5.0
    )
    session.receive_text(json.dumps({"type": "connection_init", "payload": {"authToken": token}}))
    await apoll_until(lambda: "connection_ack" in peer.types(), timeout_s=5, what="the ack")
    clock.advance(ttl + 4.0)  # past exp, within the leeway
    assert peer.closed is None
    clock.advance(2.0)
    assert peer.closed == (4403, "Forbidden: token expired")
    session.connection_lost()


@pytest.mark.parametrize("subprotocol", [TWS, LEGACY])
async def test_connection_lost_ends_every_operation(subprotocol: str, fanout: Fanout) -> None:
    """However the transport ends (reset, EOF, no close frame), every subscription leaves its
    group and runs ``unsubscribed``, and the gauges return to where they were."""
    session, peer, _ = open_session(subprotocol)
    await acknowledged(session, peer)
    groups = [f"lost-{subprotocol}-{i}" for i in range(10)]
    for i, group in enumerate(groups):
        query = f'subscription {{ ticker(group: "{group}") {{ value }} }}'
        session.receive_text(
            json.dumps({"id": str(i), "type": START[subprotocol], "payload": {"query": query}})
        )
    keys = {Ticker.group_key(group) for group in groups}
    await apoll_until(lambda: keys <= fanout.broker.groups(), timeout_s=5, what="every join")
    session.connection_lost()
    await session.wait_closed(5.0)
    assert not keys & fanout.broker.groups()
    assert all({"group": group} in schemas.UNSUBSCRIBED for group in groups)
    assert session.pending() == []
