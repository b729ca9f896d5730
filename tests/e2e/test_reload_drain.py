"""A reload (HUP) with live subscribers: the old workers keep delivering for the drain period,
then close with 1012 (Service Restart), spread out; no event published before the close is lost.
Real gunicorn, nginx and Redis; a publisher every 20 ms."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.broker import make_broker
from service.subscriptions import Fanout
from support.polling import apoll_until
from support.schemas import Ticker
from support.stack import REDIS_URL, Stack, running_stack

pytestmark = pytest.mark.timeout(120)

DRAIN_S = 2.0
SPREAD_S = 1.0
GROUP = "reload-drain"


@pytest.fixture
def stack() -> Iterator[Stack]:
    env = {"WS_RELOAD_DRAIN_S": str(DRAIN_S), "WS_RELOAD_SPREAD_S": str(SPREAD_S)}
    with running_stack(workers=2, app="support.schemas:schema", env=env) as s:
        yield s


async def subscriber(stack: Stack, subprotocol: str) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{stack.port}/graphql", subprotocols=[subprotocol])  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init"}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert ack["type"] == "connection_ack"
    start = "subscribe" if subprotocol == "graphql-transport-ws" else "start"
    query = f'subscription {{ ticker(group: "{GROUP}") {{ value }} }}'
    await ws.send(json.dumps({"id": "1", "type": start, "payload": {"query": query}}))
    return ws


async def collect(ws: ClientConnection, into: list[int]) -> tuple[int | None, float]:
    """Every ticker value until the server closes; the close code and when it came."""
    try:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] in ("next", "data"):
                into.append(message["payload"]["data"]["ticker"]["value"])
    except ConnectionClosed:
        pass
    return ws.close_code, time.monotonic()


async def scenario(stack: Stack) -> None:
    clients = [await subscriber(stack, sp) for sp in ["graphql-transport-ws", "graphql-ws"] * 3]
    received: list[list[int]] = [[] for _ in clients]
    tasks = [
        asyncio.create_task(collect(ws, got)) for ws, got in zip(clients, received, strict=True)
    ]
    publisher = Fanout(make_broker(REDIS_URL))
    await publisher.start()
    sent: list[tuple[int, float]] = []
    try:
        value = 0
        # Every client must be live before the reload: publish until each has received.
        while not all(received):
            await Ticker.broadcast(GROUP, {"value": value})
            sent.append((value, time.monotonic()))
            value += 1
            await asyncio.sleep(0.02)  # the publisher's pace, not a wait for an outcome
            assert value < 1000, "subscribers never became live"
        assert stack.proc is not None
        reloaded_at = time.monotonic()
        stack.proc.send_signal(signal.SIGHUP)
        while not all(task.done() for task in tasks) and time.monotonic() < reloaded_at + 30:
            await Ticker.broadcast(GROUP, {"value": value})
            sent.append((value, time.monotonic()))
            value += 1
            await asyncio.sleep(0.02)  # the publisher's pace
        outcomes = [await asyncio.wait_for(task, 5) for task in tasks]
    finally:
        await publisher.close()
    close_times = []
    for (code, closed_at), got in zip(outcomes, received, strict=True):
        assert code == 1012, f"closed with {code}, not 1012 (Service Restart)"
        assert closed_at >= reloaded_at + DRAIN_S * 0.9, "closed before the drain ran out"
        close_times.append(closed_at)
        # Nothing lost: every event sent from this client's first one until shortly before
        # its close arrived, in order (the last ones may race the close).
        first = got[0]
        expected = [v for v, at in sent if v >= first and at < closed_at - 0.3]
        assert got[: len(expected)] == expected, (got[:10], expected[:10])
    assert max(close_times) - min(close_times) >= SPREAD_S * 0.3, "closes were not spread"


def test_reload_drains_websockets_then_closes_them_with_1012(stack: Stack) -> None:
    asyncio.run(scenario(stack))

    # The new generation serves subscriptions too.
    async def resubscribed() -> Any:
        ws = await subscriber(stack, "graphql-transport-ws")
        await ws.close()
        return True

    asyncio.run(apoll_until(resubscribed, timeout_s=20, what="a subscription after the reload"))
