"""A live WebSocket subscription survives a Redis restart (our own redis-server on a free port)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from service.broker.base import BrokerUnavailable
from service.server.serve import Server, serve
from service.settings import Settings
from support.polling import apoll_until
from support.redisutil import OwnRedis
from support.schemas import Ticker, schema
from support.stack import free_port

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    server = OwnRedis(free_port(), tmp_path)
    try:
        yield server
    finally:
        await server.stop()


async def test_subscription_keeps_receiving_after_redis_restart(own_redis: OwnRedis) -> None:
    from prometheus_client import REGISTRY

    reconnects_before = REGISTRY.get_sample_value("graphql_broker_reconnects_total") or 0
    await own_redis.start()
    settings = Settings(redis_url=own_redis.url)
    srv = await serve(schema, [{"protocol": "tcp", "port": 0}], run=False, settings=settings)
    assert isinstance(srv, Server)
    try:
        url = f"ws://127.0.0.1:{srv.tcp_port()}/graphql"
        async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
            query = 'subscription { ticker(group: "restart") { value } }'
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))

            async def publish_until_received(value: int) -> None:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while True:
                    assert loop.time() < deadline, "no event arrived"
                    try:
                        await Ticker.broadcast(group="restart", payload={"value": value})
                    except BrokerUnavailable:
                        await asyncio.sleep(0.05)
                        continue
                    try:
                        message = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    except TimeoutError:
                        continue
                    assert message["payload"]["data"]["ticker"]["value"] == value
                    return

            await publish_until_received(1)
            await own_redis.stop()
            with pytest.raises(BrokerUnavailable):
                await Ticker.broadcast(group="restart", payload={"value": -1})
            await own_redis.start()
            await publish_until_received(2)
        srv.recorder.flush()  # the server hands its counts over once a second
        reconnects = REGISTRY.get_sample_value("graphql_broker_reconnects_total") or 0
        assert reconnects > reconnects_before
    finally:
        await srv.close(2.0)


async def test_no_event_whose_broadcast_returned_is_lost_across_a_restart(
    own_redis: OwnRedis,
) -> None:
    """A publisher every 20 ms through a Redis restart: every event whose ``broadcast`` returned
    reaches every connected subscriber exactly once, in order, including those published after
    Redis came back and before the worker had subscribed again (replayed from the group's log)."""
    await own_redis.start()
    settings = Settings(redis_url=own_redis.url)
    srv = await serve(schema, [{"protocol": "tcp", "port": 0}], run=False, settings=settings)
    url = f"ws://127.0.0.1:{srv.tcp_port()}/graphql"
    clients = []
    received: list[list[int]] = []
    returned: list[int] = []

    async def listen(ws: Any, into: list[int]) -> None:
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] in ("next", "data"):
                into.append(message["payload"]["data"]["ticker"]["value"])

    try:
        for subprotocol in ("graphql-transport-ws", "graphql-ws", "graphql-transport-ws"):
            ws = await connect(url, subprotocols=[subprotocol])  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
            start = "subscribe" if subprotocol == "graphql-transport-ws" else "start"
            query = 'subscription { ticker(group: "replay") { value } }'
            await ws.send(json.dumps({"id": "1", "type": start, "payload": {"query": query}}))
            clients.append(ws)
            received.append([])
        fanout = srv.fanout
        await apoll_until(
            lambda: Ticker.group_key("replay") in fanout.broker.groups(), timeout_s=5, what="join"
        )
        listeners = [
            asyncio.create_task(listen(ws, got)) for ws, got in zip(clients, received, strict=True)
        ]

        async def publish(value: int) -> None:
            try:
                await Ticker.broadcast(group="replay", payload={"value": value})
            except BrokerUnavailable:
                return
            returned.append(value)

        value = 0
        for _ in range(25):
            await publish(value := value + 1)
            await asyncio.sleep(0.02)  # the publisher's pace
        await own_redis.stop()
        for _ in range(10):
            await publish(value := value + 1)
            await asyncio.sleep(0.02)
        await own_redis.start()
        after_restart = len(returned)
        for _ in range(200):
            await publish(value := value + 1)
            await asyncio.sleep(0.02)
            if len(returned) - after_restart >= 40:
                break
        last = returned[-1]
        await apoll_until(
            lambda: all(got and got[-1] == last for got in received),
            timeout_s=20,
            what="the last event at every subscriber",
        )
        for task in listeners:
            task.cancel()
        for got in received:
            assert len(got) == len(set(got)), "an event arrived twice"
            assert [v for v in got if v in set(returned)] == returned
    finally:
        for ws in clients:
            await ws.close()
        await srv.close(2.0)
