"""Every operation of a WebSocket ends, however its connection ends (issue: subscriptions leaked
when a client's TCP connection dropped without a close frame while they were starting).

A real server with the Redis broker (the leak needed Redis' subscribe round trip), clients that
reset the connection at different moments, then: no subscription counted as active, no group
held by the worker, no channel subscribed at Redis, every ``unsubscribed`` hook run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from websockets.asyncio.client import ClientConnection, connect

from service.broker import DEFAULT_CHANNEL_PREFIX
from service.engine.recorder import NullRecorder
from service.server.serve import Server, serve
from service.settings import Settings
from support import schemas
from support.polling import apoll_until
from support.schemas import Ticker, schema

REDIS_URL = "redis://127.0.0.1:6379/0"
START = {"graphql-transport-ws": "subscribe", "graphql-ws": "start"}


class Gauges(NullRecorder):
    """Keeps the two gauges these tests watch."""

    def __init__(self) -> None:
        self.subscriptions_now = 0
        self.websockets_now = 0

    def subscriptions(self, delta: int) -> None:
        self.subscriptions_now += delta

    def websocket(self, subprotocol: str, delta: int) -> None:
        self.websockets_now += delta


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, Gauges]]:
    gauges = Gauges()
    server = await serve(
        schema,
        [{"protocol": "tcp", "port": 0}],
        run=False,
        settings=Settings(redis_url=REDIS_URL),
        recorder=gauges,
    )
    try:
        yield server, gauges
    finally:
        await server.close(2.0)


async def open_ws(server: Server, subprotocol: str, init: bool = True) -> ClientConnection:
    url = f"ws://127.0.0.1:{server.tcp_port()}/graphql"
    ws = await connect(url, subprotocols=[subprotocol])  # type: ignore[list-item]
    if init:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
    return ws


async def subscribe(ws: ClientConnection, subprotocol: str, op_id: str, group: str) -> None:
    query = f'subscription {{ ticker(group: "{group}") {{ value }} }}'
    message = {"id": op_id, "type": START[subprotocol], "payload": {"query": query}}
    await ws.send(json.dumps(message))


async def all_gone(server: Server, gauges: Gauges, groups: list[str]) -> None:
    """Poll until nothing of ``groups`` is left anywhere, and check that ``unsubscribed`` ran
    for every subscription whose ``subscribe`` hook ran (an operation cancelled before that never
    started)."""
    keys = {Ticker.group_key(group) for group in groups}
    channels = [DEFAULT_CHANNEL_PREFIX + key for key in keys]
    client: Any = redis.asyncio.Redis.from_url(REDIS_URL)

    async def unsubscribed_at_redis() -> bool:
        counts = await client.pubsub_numsub(*channels)
        return sum(count for _, count in counts) == 0

    try:
        await apoll_until(
            lambda: gauges.subscriptions_now == 0 and gauges.websockets_now == 0,
            timeout_s=10,
            what="the gauges back at zero",
        )
        await apoll_until(
            lambda: not keys & server.fanout.broker.groups(), timeout_s=10, what="groups left"
        )
        await apoll_until(unsubscribed_at_redis, timeout_s=10, what="Redis unsubscribed")
    finally:
        await client.aclose()
    started = [group for group in groups if group in schemas.SUBSCRIBED]
    missing = [group for group in started if {"group": group} not in schemas.UNSUBSCRIBED]
    assert not missing, f"unsubscribed never ran for {missing}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("subprotocol", list(START))
async def test_reset_right_after_subscribing(
    served: tuple[Server, Gauges], subprotocol: str
) -> None:
    """The campaign's case: 10 subscribes, then a TCP reset, 20 times over."""
    server, gauges = served
    run = uuid.uuid4().hex[:8]
    groups = []
    for round_ in range(20):
        ws = await open_ws(server, subprotocol)
        for i in range(10):
            group = f"reset-{run}-{round_}-{i}"
            groups.append(group)
            await subscribe(ws, subprotocol, str(i), group)
        ws.transport.abort()  # no close frame: an RST
    await all_gone(server, gauges, groups)


@pytest.mark.parametrize("subprotocol", list(START))
async def test_reset_between_subscribe_messages(
    served: tuple[Server, Gauges], subprotocol: str
) -> None:
    server, gauges = served
    run = uuid.uuid4().hex[:8]
    groups = [f"between-{run}-{i}" for i in range(5)]
    ws = await open_ws(server, subprotocol)
    for i, group in enumerate(groups[:3]):
        await subscribe(ws, subprotocol, str(i), group)
    fanout = server.fanout
    await apoll_until(
        lambda: Ticker.group_key(groups[2]) in fanout.broker.groups(),
        timeout_s=10,
        what="the third join",
    )
    await subscribe(ws, subprotocol, "3", groups[3])
    ws.transport.abort()
    await all_gone(server, gauges, groups[:4])


@pytest.mark.parametrize("subprotocol", list(START))
async def test_eof_during_the_handshake(served: tuple[Server, Gauges], subprotocol: str) -> None:
    server, gauges = served
    ws = await open_ws(server, subprotocol, init=False)
    await ws.send(json.dumps({"type": "connection_init"}))
    ws.transport.close()  # EOF before the ack arrives
    await all_gone(server, gauges, [])


@pytest.mark.parametrize("subprotocol", list(START))
async def test_close_frame_and_server_shutdown(subprotocol: str) -> None:
    gauges = Gauges()
    server = await serve(
        schema,
        [{"protocol": "tcp", "port": 0}],
        run=False,
        settings=Settings(redis_url=REDIS_URL),
        recorder=gauges,
    )
    run = uuid.uuid4().hex[:8]
    closed_group, shutdown_group = f"closed-{run}", f"shutdown-{run}"
    try:
        polite = await open_ws(server, subprotocol)
        await subscribe(polite, subprotocol, "a", closed_group)
        staying = await open_ws(server, subprotocol)
        await subscribe(staying, subprotocol, "b", shutdown_group)
        keys = {Ticker.group_key(closed_group), Ticker.group_key(shutdown_group)}
        await apoll_until(
            lambda: keys <= server.fanout.broker.groups(), timeout_s=10, what="both joins"
        )
        await polite.close()
        await apoll_until(
            lambda: {"group": closed_group} in schemas.UNSUBSCRIBED,
            timeout_s=10,
            what="unsubscribed after a close frame",
        )
    finally:
        await server.close(2.0)
    assert {"group": shutdown_group} in schemas.UNSUBSCRIBED
    assert gauges.subscriptions_now == 0 and gauges.websockets_now == 0
