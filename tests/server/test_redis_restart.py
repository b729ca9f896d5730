"""A live WebSocket subscription survives a Redis restart (our own redis-server on a free port)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from service.broker.base import BrokerUnavailable
from service.server.serve import Server, serve
from service.settings import Settings
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
        reconnects = REGISTRY.get_sample_value("graphql_broker_reconnects_total") or 0
        assert reconnects > reconnects_before
    finally:
        await srv.close(2.0)
